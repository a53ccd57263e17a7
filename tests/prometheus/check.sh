#!/usr/bin/env bash
# qgpt's metrics against Prometheus's own tools (Debian package `prometheus`; .ci/run installs it):
# 1. `promtool check metrics` on a real scrape after traffic;
# 2. `promtool check rules` and `promtool test rules` on deploy/prometheus;
# 3. a real Prometheus server on loopback scrapes qgpt; PromQL through its HTTP API returns the
#    request count that `qgpt loadtest` made, and every query of the Grafana dashboard runs.
# Usage: tests/prometheus/check.sh QGPT_BINARY MODEL.gguf
set -euo pipefail
cd "$(dirname "$0")/../.."
qgpt=$1
model=$2
requests=6

for tool in promtool prometheus python3; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is missing" >&2; exit 1; }
done
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
get() { # URL -> body (fails on HTTP errors)
  python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
}
wait_for() { # DESCRIPTION SECONDS COMMAND...
  local what=$1 secs=$2
  shift 2
  for _ in $(seq $((secs * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "FAIL: $what" >&2
  return 1
}

grpc_port=$(free_port)
metrics_port=$(free_port)
"$qgpt" serve -m "$model" --host 127.0.0.1 --port "$grpc_port" --metrics-port "$metrics_port" \
  2> "$work/serve.log" &
pids+=($!)
metrics_url="http://127.0.0.1:$metrics_port/metrics"
has_build_info() { get "$metrics_url" | grep -q '^qgpt_build_info{'; }
wait_for "qgpt serve never exposed qgpt_build_info" 60 has_build_info || { cat "$work/serve.log" >&2; exit 1; }

echo "-- promtool check rules / test rules"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

echo "-- Prometheus server scraping qgpt"
prom_port=$(free_port)
cat > "$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $PWD/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: qgpt
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
EOF
promtool check config "$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prom_port" 2> "$work/prometheus.log" &
pids+=($!)
api="http://127.0.0.1:$prom_port/api/v1"
query() { # PROMQL -> the JSON answer of an instant query
  python3 -c 'import sys, urllib.parse, urllib.request
url = sys.argv[1] + "/query?" + urllib.parse.urlencode({"query": sys.argv[2]})
sys.stdout.write(urllib.request.urlopen(url, timeout=5).read().decode())' "$api" "$1"
}
count_is() { # PROMQL VALUE: the query's single sample equals VALUE
  query "$1" | python3 -c 'import json, sys
r = json.load(sys.stdin)["data"]["result"]
sys.exit(0 if len(r) == 1 and float(r[0]["value"][1]) == float(sys.argv[1]) else 1)' "$2"
}
wait_for "Prometheus never scraped qgpt" 60 count_is 'up{job="qgpt"}' 1

# Traffic while Prometheus scrapes, so that rates over the last minute have data.
"$qgpt" loadtest --addr "127.0.0.1:$grpc_port" --concurrency 2 --requests "$requests" \
  --prompt-tokens 4 --max-new-tokens 8 --json > "$work/loadtest.json"

echo "-- promtool check metrics"
get "$metrics_url" > "$work/scrape.txt"
promtool check metrics < "$work/scrape.txt"

if ! wait_for "Prometheus never saw $requests requests in sum(qgpt_requests_total)" 60 \
  count_is 'sum(qgpt_requests_total{job="qgpt"})' "$requests"; then
  query 'sum(qgpt_requests_total{job="qgpt"})' >&2 || true
  tail -20 "$work/prometheus.log" >&2
  exit 1
fi
echo "sum(qgpt_requests_total) = $requests, as sent"
count_is 'sum(qgpt_requests_total{finish_reason="length",code="OK"})' "$requests"
count_is "sum(qgpt_time_to_first_token_seconds_count)" "$requests"
count_is 'up{job="qgpt"}' 1
generated=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["generated_tokens"])' "$work/loadtest.json")
count_is "sum(qgpt_generated_tokens_total)" "$generated"
echo "sum(qgpt_generated_tokens_total) = $generated, as loadtest received"

echo "-- every query of deploy/grafana/qgpt-dashboard.json"
sleep 2 # two more scrapes after the traffic: every rate has two samples that differ
python3 - "$api" deploy/grafana/qgpt-dashboard.json <<'EOF'
import json, sys, urllib.parse, urllib.request
api, path = sys.argv[1], sys.argv[2]
dash = json.load(open(path))
exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
empty = []
for e in exprs:
    q = e.replace("$__rate_interval", "1m").replace("$instance", ".*")
    url = api + "/query?" + urllib.parse.urlencode({"query": q})
    r = json.load(urllib.request.urlopen(url, timeout=5))
    if r["status"] != "success":
        sys.exit(f"FAIL: {e}: {r}")
    if not r["data"]["result"]:
        empty.append(e)
print(f"{len(exprs)} queries ran; {len(exprs) - len(empty)} returned data")
if empty:
    sys.exit("FAIL: no data for:\n" + "\n".join(empty))
EOF

kill -TERM "${pids[0]}"
wait "${pids[0]}"
echo "ok"
