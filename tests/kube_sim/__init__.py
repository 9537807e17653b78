"""A simulation of the Kubernetes API subset nbscale's Argo executor uses (tests only, never shipped).

``server.KubeSim`` answers the real ``kubernetes`` client on 127.0.0.1: workflows and RayJobs
(validated against the vendored CRDs, unknown fields rejected), pods and their logs, watches, and
errors injected on demand. ``controller.ArgoSimController`` moves workflows through Argo's phases.
It is a simulation: it imitates what the executor relies on, not Kubernetes or Argo as a whole.
"""
