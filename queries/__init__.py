"""Canned Cypher queries over the circuit graph: ``queries.run(name, **params)``."""

from queries.runner import Query, QueryError, get_query, list_queries, run

__all__ = ["Query", "QueryError", "get_query", "list_queries", "run"]
