#!/usr/bin/env bash
# The deployment files against the tools a platform team would run (.ci/run calls this with the
# venv of tests/deploy/requirements.txt first on PATH):
# 1. kustomize renders the base and the example overlay (kubectl kustomize);
# 2. every rendered object and example validates against the Kubernetes 1.30 schemas, strictly;
# 3. yamllint and checkov over deploy/ (suppressions, each justified, in .checkov.yaml and the
#    Dockerfile);
# 4. check.py: flags, env vars, ports, probe services and metric names match the code;
# 5. quota_drain.sh: one core of CPU quota gives one compute thread; SIGTERM drains in time.
# Usage: tests/deploy/check.sh QGPT_BINARY
set -euo pipefail
cd "$(dirname "$0")/../.."
qgpt=$1
for tool in kubectl kubernetes-validate yamllint checkov python; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "-- kustomize ($(kubectl version --client 2>/dev/null | grep -i kustomize))"
kubectl kustomize deploy/k8s/base > "$work/base.yaml"
kubectl kustomize deploy/k8s/overlays/example > "$work/example.yaml"
echo "base: $(grep -c '^kind:' "$work/base.yaml") objects, example overlay: $(grep -c '^kind:' "$work/example.yaml")"

echo "-- kubernetes-validate, Kubernetes 1.30, strict"
# The Prometheus Operator's kinds have no schema there (a warning); promtool checks their rules.
kubernetes-validate -k 1.30.0 --strict --quiet "$work/base.yaml" "$work/example.yaml" \
  deploy/k8s/examples/hpa-queued.yaml

echo "-- yamllint"
yamllint -c .yamllint.yaml deploy/ .yamllint.yaml .checkov.yaml

echo "-- checkov"
checkov --config-file .checkov.yaml -d deploy

echo "-- consistency with qgpt serve --help, the proto and the metrics"
python tests/deploy/check.py "$qgpt" "$work/example.yaml"

echo "-- one core of CPU quota, and SIGTERM with streams in flight"
PY=python bash tests/deploy/quota_drain.sh "$qgpt" tests/fixtures/models/gpt2vocab-q8_0.gguf \
  "$work/example.yaml"
echo "ok"
