# The one nbscale image: a JupyterHub single-user server with the nbscale server extension, lab
# extension and magics. Compiled steps and sweeps run in it too (nbscale-step, papermill, MLflow,
# Ray), and the Helm chart runs the quota service and the MLflow server from it.
# Build the lab extension first (scripts/bootstrap.sh demo), then, from the repository root:
#   docker build -f images/singleuser.Dockerfile -t nbscale/singleuser:0.1.0 .
# Base: Jupyter Docker Stacks' scipy-notebook, pinned by its dated tag (no published digest was at
# hand; pin one with `docker buildx imagetools inspect quay.io/jupyter/scipy-notebook:2025-12-31`).
FROM quay.io/jupyter/scipy-notebook:2025-12-31

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MPLBACKEND=Agg \
    MLFLOW_DISABLE_TELEMETRY=true
# users (100) is jovyan's primary group and a pod's fsGroup (z2jh singleuser.fsGid, the chart's runner pods): kubelet
# makes the home volume group-writable, and nbscale counts that group as private only when named. A gid, not a secret:
# hadolint ignore=DL3064
ENV NBSCALE_PRIVATE_GROUP=100

USER 0
# owned by the notebook user: pip builds the package in place (build/, *.egg-info)
RUN install -d -o 1000 -g 100 /opt/nbscale
WORKDIR /opt/nbscale
COPY --chown=1000:100 setup.py README.md ./
COPY --chown=1000:100 workflow_compiler ./workflow_compiler
COPY --chown=1000:100 notebook_plugin ./notebook_plugin
COPY --chown=1000:100 hub_extension ./hub_extension

USER 1000
# psycopg: the quota service and MLflow on Postgres; boto3: MLflow's S3 artifact store.
RUN pip install --no-cache-dir /opt/nbscale "psycopg[binary]==3.2.*" "boto3==1.40.*" \
    && test -f notebook_plugin/labextension_build/package.json \
    && jupyter server extension list 2>&1 | grep -q "notebook_plugin.*enabled" \
    && jupyter labextension list 2>&1 | grep -q "nbscale.*enabled" \
    && nbscale-step --help >/dev/null \
    && python -c "import hub_extension, workflow_compiler" \
    && fix-permissions "${CONDA_DIR}"

WORKDIR /home/jovyan
