# The image every compiled step runs in: nbscale's step runtime, papermill, MLflow, Ray, and a
# Python kernel. Build from the repository root:
#   docker build -f images/runner.Dockerfile -t nbscale/runner:0.1.0 .
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MPLBACKEND=Agg

RUN apt-get update \
    && apt-get install -y --no-install-recommends git=1:2.39.* tini=0.19.* \
    && rm -rf /var/lib/apt/lists/*

# A non-root user with the uid JupyterHub's single-user images use, so files on the shared
# workspace volume keep their owner.
RUN useradd --create-home --uid 1000 --gid 100 jovyan
WORKDIR /opt/nbscale
COPY setup.py README.md ./
COPY workflow_compiler ./workflow_compiler
COPY notebook_plugin ./notebook_plugin
COPY hub_extension ./hub_extension
RUN pip install --no-cache-dir . \
    && python -m ipykernel install --sys-prefix --name python3

USER 1000:100
WORKDIR /home/jovyan
ENTRYPOINT ["tini", "--"]
CMD ["nbscale-step", "--help"]
