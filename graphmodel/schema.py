"""Constraints and indexes of the circuit graph, created on first use and idempotently.

Neo4j Community has no NODE KEY or existence constraints, so every key is a (single or composite)
uniqueness constraint; the writer always sets key properties, and MERGE on them is then safe.
Relationship property indexes on ``run_id`` make per-run reads and deletes cheap. See
docs/graph-model.md for the whole model.
"""

from __future__ import annotations

from neo4j import Driver
from neo4j.exceptions import ClientError

# 2: centroids as float32 bytes (centroid_f32; graphmodel/vectors.py), LABELED and group run_id indexes.
SCHEMA_VERSION = 2

CONSTRAINTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "model_key": ("Model", ("model_id",)),
    "layer_key": ("Layer", ("model_id", "name")),
    "neuron_key": ("Neuron", ("model_id", "layer", "index")),
    "class_key": ("Class", ("model_id", "index")),
    "run_key": ("Run", ("run_id",)),
    "patch_key": ("Patch", ("patch_id",)),
    "semantic_group_key": ("SemanticGroup", ("sg_id",)),
    "neuron_group_key": ("NeuronGroup", ("ng_id",)),
    "concept_key": ("Concept", ("name",)),
    "audit_key": ("AuditResult", ("audit_id",)),
    "campaign_key": ("Campaign", ("campaign_id",)),
}

NODE_INDEXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "run_status": ("Run", ("status",)),
    "run_model_class": ("Run", ("model_id", "class_index")),
    "run_model_status": ("Run", ("model_id", "status")),  # "the latest COMPLETE run of a model's class"
    "class_name": ("Class", ("name",)),
    "semantic_group_run": ("SemanticGroup", ("run_id", "layer")),
    "neuron_group_run": ("NeuronGroup", ("run_id", "layer")),
    # A composite index serves only lookups on all its keys; per-run reads and counts use these.
    "semantic_group_run_id": ("SemanticGroup", ("run_id",)),
    "neuron_group_run_id": ("NeuronGroup", ("run_id",)),
    "audit_run": ("AuditResult", ("run_id",)),
}

RELATIONSHIP_INDEXES: dict[str, tuple[str, str]] = {
    "core_of_run": ("CORE_OF", "run_id"),
    "influences_run": ("INFLUENCES", "run_id"),
    "feeds_run": ("FEEDS", "run_id"),
    "circuit_neuron_run": ("CIRCUIT_NEURON", "run_id"),
    "labeled_run": ("LABELED", "run_id"),
}


def schema_statements() -> list[str]:
    """The DDL, in creation order. Names and labels are constants of this module, never user input."""
    statements = []
    for name, (label, keys) in CONSTRAINTS.items():
        props = ", ".join(f"n.{k}" for k in keys)
        target = f"({props})" if len(keys) > 1 else props
        statements.append(
            f"CREATE CONSTRAINT {name} IF NOT EXISTS FOR (n:{label}) REQUIRE {target} IS UNIQUE"
        )
    for name, (label, keys) in NODE_INDEXES.items():
        props = ", ".join(f"n.{k}" for k in keys)
        statements.append(f"CREATE INDEX {name} IF NOT EXISTS FOR (n:{label}) ON ({props})")
    for name, (rel_type, prop) in RELATIONSHIP_INDEXES.items():
        statements.append(f"CREATE INDEX {name} IF NOT EXISTS FOR ()-[r:{rel_type}]-() ON (r.{prop})")
    return statements


def ensure_schema(driver: Driver, *, database: str | None = None, wait_seconds: int = 300) -> None:
    """Create missing constraints and indexes, then wait until every index is online.

    Cheap when everything exists (each statement is a no-op), so the writer calls it on every run.
    """
    for statement in schema_statements():
        try:
            driver.execute_query(statement, database_=database)
        except ClientError as exc:  # another process created the same rule a moment ago
            if "AlreadyExists" not in (exc.code or ""):
                raise
    driver.execute_query(f"CALL db.awaitIndexes({int(wait_seconds)})", database_=database)
