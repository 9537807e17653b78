"""The step runtime ``nbscale-step``: runs one notebook with papermill and records it in MLflow.

Modules, one idea each: ``execute`` (papermill engine, progress), ``tracking`` (MLflow calls),
``render`` (HTML), ``outcome`` (how a run ended), ``interrupts`` (signals and deadline), ``step``
(the ``run`` subcommand), ``parent`` (a pipeline's parent run). The helper process that owns
MLflow during a step, and the warm agent, are in ``workflow_compiler.tracking``.
"""
