"""`neurflow`: the one group every command hangs on.

Each command lives in its own module of this package and imports only click and light modules at
the top; the method (torch, scipy, sklearn) and the services' drivers are imported inside the
command bodies, so `neurflow --help` and every usage error answer without loading them.
"""

from __future__ import annotations

import click

from ingest.cli.audit import audit_command
from ingest.cli.campaign import campaign_group
from ingest.cli.debug import debug_command
from ingest.cli.demo import demo_command
from ingest.cli.evaluate import evaluate_command
from ingest.cli.extract import extract_command, layers_command, show_command
from ingest.cli.ingest import ingest_command
from ingest.cli.label import label_group
from ingest.cli.label_clip import clip_command
from ingest.cli.label_mllm import mllm_command
from ingest.cli.planted_data import planted_data_command
from ingest.cli.query import query_command
from ingest.cli.report import report_command
from ingest.cli.runs import runs_command
from ingest.cli.stack import stack_group


def _user_error_types() -> tuple[type[Exception], ...]:
    """The core's errors a user can fix. Read from the modules only when they were imported: an
    error of a module nobody loaded cannot have been raised, and importing it would load torch."""
    import sys

    wanted = {
        "ingest.core.layers": "LayerError",
        "ingest.core.models": "ModelError",
        "ingest.core.patches": "ImageFolderError",
        "ingest.core.circuit": "CircuitInputError",
        "ingest.pipeline.output": "OutputError",
        "graphmodel.records": "CircuitFileError",
        "graphmodel.stack.config": "StackError",
        "graphmodel.connection": "GraphStoreError",
        "graphmodel.patchstore": "PatchStoreError",
    }
    return tuple(getattr(sys.modules[m], name) for m, name in wanted.items() if m in sys.modules)


class _Group(click.Group):
    """Shows errors the user can fix as one clear line (exit code 1), not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if isinstance(exc, _user_error_types()):
                raise click.ClickException(str(exc)) from exc
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="neurflow-graph")
def main() -> None:
    """NeurFlow Graph: find the neuron groups a vision classifier uses for a class, and how they
    feed each other layer by layer.

    \b
    Start with:  neurflow demo
    Then:        neurflow layers resnet50          (which layer names are valid)
                 neurflow extract --help           (explain a class of your own model)
    """


for command, name in [
    (layers_command, "layers"),
    (extract_command, "extract"),
    (demo_command, "demo"),
    (planted_data_command, "planted-data"),
    (show_command, "show"),
    (ingest_command, "ingest"),
    (runs_command, "runs"),
    (campaign_group, "campaign"),
    (stack_group, "stack"),
    (query_command, "query"),
    (label_group, "label"),
    (audit_command, "audit"),
    (evaluate_command, "evaluate"),
    (debug_command, "debug"),
    (report_command, "report"),
]:
    main.add_command(command, name)
label_group.add_command(mllm_command, "mllm")
label_group.add_command(clip_command, "clip")
