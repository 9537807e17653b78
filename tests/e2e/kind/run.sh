#!/usr/bin/env bash
# Opt-in end-to-end run of the whole stack on a throwaway kind cluster (docs/deploy.md).
# Needs docker, kind, kubectl and helm on PATH, and the repository's virtualenv (make test).
#   tests/e2e/kind/run.sh                 # create, install, test, delete the cluster
#   NBSCALE_KIND_KEEP=1 tests/e2e/kind/run.sh -k quota    # keep the cluster; extra args go to pytest
set -euo pipefail
cd "$(dirname "$0")/../../.."

# The versions nbscale targets (they match the CRDs vendored in workflow_compiler/schemas/).
ARGO_CHART_VERSION=2.0.1      # argo/argo-workflows: Argo Workflows v4.1.0
KUBERAY_CHART_VERSION=1.7.0   # kuberay/kuberay-operator: KubeRay 1.7.0
KUEUE_CHART_VERSION=0.19.2    # oci://registry.k8s.io/kueue/charts/kueue: Kueue 0.19.2
Z2JH_CHART_VERSION=4.4.0      # jupyterhub/jupyterhub: Zero to JupyterHub 4.4.0

CLUSTER="${NBSCALE_KIND_CLUSTER:-nbscale-e2e}"
NAMESPACE=jhub
IMAGE=nbscale/singleuser:0.1.0
VENV="${NBSCALE_VENV:-.venv}"
HERE=tests/e2e/kind

for tool in docker kind kubectl helm openssl; do
  command -v "$tool" >/dev/null || { echo "run.sh needs '$tool' on PATH" >&2; exit 2; }
done
[ -x "$VENV/bin/python" ] || { echo "no virtualenv at $VENV: run 'make test' first" >&2; exit 2; }

workdir="$(mktemp -d)"
forwards=()
cleanup() {
  for pid in "${forwards[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "${NBSCALE_KIND_KEEP:-0}" != 1 ]; then kind delete cluster --name "$CLUSTER" || true; fi
  rm -rf "$workdir"
}
trap cleanup EXIT

echo "== kind cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --wait 180s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
export KUBECONFIG="$workdir/kubeconfig"
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"

echo "== prerequisites: Argo Workflows, KubeRay, Kueue"
helm repo add argo https://argoproj.github.io/argo-helm --force-update >/dev/null
helm repo add kuberay https://ray-project.github.io/kuberay-helm/ --force-update >/dev/null
helm repo add jupyterhub https://hub.jupyter.org/helm-chart/ --force-update >/dev/null
helm upgrade --install argo-workflows argo/argo-workflows --version "$ARGO_CHART_VERSION" \
  --namespace argo --create-namespace --wait
helm upgrade --install kuberay-operator kuberay/kuberay-operator --version "$KUBERAY_CHART_VERSION" \
  --namespace kuberay --create-namespace --wait
helm upgrade --install kueue oci://registry.k8s.io/kueue/charts/kueue --version "$KUEUE_CHART_VERSION" \
  --namespace kueue-system --create-namespace --wait

echo "== image $IMAGE"
scripts/bootstrap.sh demo  # builds the lab extension the image installs
docker build -f images/singleuser.Dockerfile -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

echo "== Zero to JupyterHub with nbscale's values, then the nbscale chart"
kubectl create namespace "$NAMESPACE"
# A SQLite run store on the artifact claim: enough for one test server (production: Postgres).
kubectl -n "$NAMESPACE" create secret generic mlflow-db --from-literal=url=sqlite:////mlartifacts/mlflow.db
admin_token="$(openssl rand -hex 32)"
# The test's own hub service: it creates users, groups and tokens, and starts servers.
cat >"$workdir/e2e-values.yaml" <<VALUES
hub:
  services:
    nbscale-e2e:
      api_token: "$admin_token"
  loadRoles:
    nbscale-e2e:
      services: [nbscale-e2e]
      scopes: [admin:users, admin:groups, tokens, admin:servers, access:servers, list:users, read:users]
VALUES
helm upgrade --install jhub jupyterhub/jupyterhub --version "$Z2JH_CHART_VERSION" --namespace "$NAMESPACE" \
  -f helm/nbscale/examples/z2jh-values.yaml -f "$HERE/z2jh-kind-values.yaml" -f "$workdir/e2e-values.yaml" \
  --wait --timeout 15m
helm upgrade --install nbscale helm/nbscale --namespace "$NAMESPACE" -f "$HERE/nbscale-values.yaml" --wait --timeout 10m

echo "== port-forwards to the hub's proxy and the MLflow server"
kubectl -n "$NAMESPACE" port-forward service/proxy-public 18080:80 >/dev/null &
forwards+=("$!")
kubectl -n "$NAMESPACE" port-forward service/nbscale-mlflow 15000:5000 >/dev/null &
forwards+=("$!")
for url in http://127.0.0.1:18080/hub/api http://127.0.0.1:15000/health; do
  for _ in $(seq 60); do curl -fsS "$url" >/dev/null 2>&1 && break; sleep 1; done
done

echo "== cluster tests"
NBSCALE_E2E_KUBECONFIG="$KUBECONFIG" \
NBSCALE_E2E_NAMESPACE="$NAMESPACE" \
NBSCALE_E2E_IMAGE="$IMAGE" \
NBSCALE_E2E_HUB_URL=http://127.0.0.1:18080 \
NBSCALE_E2E_HUB_TOKEN="$admin_token" \
NBSCALE_E2E_MLFLOW_URL=http://127.0.0.1:15000 \
NBSCALE_E2E_KUEUE_QUEUE=e2e \
  "$VENV/bin/python" -m pytest tests/e2e -m cluster "$@"
