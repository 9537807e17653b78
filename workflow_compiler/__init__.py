"""nbscale: notebook inspection, run specs, the Argo compiler, runtime, executors and CLI."""

import sys

# jsonschema imports the optional rfc3987_syntax (pulled in by jupyter-events) to check the
# "iri" format, and that import builds a Lark grammar: 2-4 s on every `nbscale` and `nbscale-step`
# start, for a format no notebook or CRD schema uses. Marking it absent makes jsonschema skip
# just that format. Processes that imported it already (a Jupyter server) are unaffected.
if "rfc3987_syntax" not in sys.modules:
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]
