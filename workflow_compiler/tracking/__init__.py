"""MLflow tracking on a machine's warm agent: the protocol between the processes that record runs.

- ``agent``: the warm tracking agent of an ``NBSCALE_HOME`` (one daemon, a Unix socket) and the
  client's handshake; ``daemon``: starting, finding, stopping and listening, shared with the sweep's
  trial host.
- ``step_tracker``: a step's side (``TrackerProcess``) and its ``step`` protocol, served by the agent
  or by a helper process of the step's own (``python -m workflow_compiler.tracking.step_tracker``).
- ``trial_tracker``: a sweep trial worker's side and its ``trials`` protocol, served by the agent.
- ``__main__``: the agent process (``python -m workflow_compiler.tracking``), which registers both.

The agent imports neither protocol: its starter hands them over (``agent.ServeHandlers``).
"""
