"""The compiler: a pure function from a run or pipeline spec to an Argo Workflow manifest.

``compile_workflow(spec) -> dict`` builds the manifest, ``to_yaml(manifest)`` prints it for
review and diffs, and ``compile_to_file(spec, out, validate)`` is the core of ``nbscale compile``.
"""

from .naming import (
    LABEL_KIND,
    LABEL_NOTEBOOK,
    LABEL_PIPELINE,
    LABEL_STEP,
    LABEL_USER,
    claim_name,
    generate_name,
    label_value,
    notebook_label,
)
from .output import compile_to_file, to_yaml
from .workflow import compile_pipeline, compile_run, compile_workflow
from .workflow_shell import CompileContext

__all__ = [
    "LABEL_KIND",
    "LABEL_NOTEBOOK",
    "LABEL_PIPELINE",
    "LABEL_STEP",
    "LABEL_USER",
    "CompileContext",
    "claim_name",
    "compile_pipeline",
    "compile_run",
    "compile_to_file",
    "compile_workflow",
    "generate_name",
    "label_value",
    "notebook_label",
    "to_yaml",
]
