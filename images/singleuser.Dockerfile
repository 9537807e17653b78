# A JupyterHub single-user image with the nbscale server extension, lab extension and magics.
# The lab extension must be built first (scripts/bootstrap.sh does it); then, from the root:
#   docker build -f images/singleuser.Dockerfile -t nbscale/singleuser:0.1.0 .
FROM quay.io/jupyter/scipy-notebook:2024-12-09

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
USER 0
COPY --chown=1000:100 . /opt/nbscale
USER 1000
RUN pip install --no-cache-dir /opt/nbscale \
    && jupyter server extension list 2>&1 | grep -q "notebook_plugin.*enabled"
