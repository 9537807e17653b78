"""nbscale: notebook inspection, run specs, the Argo compiler, runtime, executors and CLI."""
