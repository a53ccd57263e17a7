#!/usr/bin/env bash
# qgpt serve as the manifests run it: under a CPU quota of one core (a cgroup when this machine
# lets us make one, else an affinity of one CPU with taskset) it sizes its compute pool to one
# thread and logs so; SIGTERM with streams in flight lets them finish and exits 0 within the
# grace period the rendered Deployment declares (less its preStop pause).
# Usage: quota_drain.sh QGPT_BINARY MODEL.gguf RENDERED.yaml   (PY: a python with PyYAML)
set -euo pipefail
qgpt=$(realpath "$1")
model=$2
rendered=$3
py=${PY:-python3}
requests=24

budget=$("$py" - "$rendered" <<'PYEOF'
import sys, yaml
(d,) = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "Deployment"]
pod = d["spec"]["template"]["spec"]
(c,) = [c for c in pod["containers"] if c["name"] == "qgpt"]
pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
print(pod["terminationGracePeriodSeconds"] - pre)
PYEOF
)
echo "SIGTERM to exit must take less than $budget s (grace period less preStop)"

work=$(mktemp -d)
cg=""
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$cg" ]; then rmdir "$cg" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# One core of quota: a child cgroup with cpu.max (v2) or a CFS quota (v1). Where none can be
# made (an unprivileged container), one CPU of affinity instead, said loudly: that proves the
# pool follows sched_getaffinity, not the quota.
launch=()
v2=/sys/fs/cgroup
if [ -f "$v2/cgroup.subtree_control" ] && grep -qw cpu "$v2/cgroup.subtree_control" \
  && mkdir "$v2/qgpt-quota-$$" 2>/dev/null; then
  cg=$v2/qgpt-quota-$$
  echo "100000 100000" > "$cg/cpu.max" 2>/dev/null || { rmdir "$cg"; cg=""; }
elif [ -d /sys/fs/cgroup/cpu ] && mkdir "/sys/fs/cgroup/cpu/qgpt-quota-$$" 2>/dev/null; then
  cg=/sys/fs/cgroup/cpu/qgpt-quota-$$
  { echo 100000 > "$cg/cpu.cfs_period_us" && echo 100000 > "$cg/cpu.cfs_quota_us"; } 2>/dev/null \
    || { rmdir "$cg"; cg=""; }
fi
if [ -n "$cg" ]; then
  echo "CPU quota: 1 core in cgroup $cg"
  launch=(sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg")
else
  cpu=$(taskset -pc $$ | sed 's/.*: //; s/[,-].*//')
  echo "WARNING: no cgroup could be made here: testing one CPU of affinity (CPU $cpu) instead"
  launch=(taskset -c "$cpu")
fi

free_port() {
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=$(free_port)
mport=$(free_port)
# One request at a time: the streams queue up, so SIGTERM comes with several in flight. Text
# logs at info whatever the caller's environment says.
env -u RUST_LOG -u QGPT_LOG_FORMAT -u QGPT_THREADS "${launch[@]}" "$qgpt" serve -m "$model" \
  --host 127.0.0.1 --port "$port" --metrics-port "$mport" --max-running 1 2> "$work/serve.log" &
server=$!
pids+=("$server")
for _ in $(seq 300); do
  grep -q " serving " "$work/serve.log" && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
grep -q " serving " "$work/serve.log" || { echo "FAIL: qgpt serve never served:" >&2; cat "$work/serve.log" >&2; exit 1; }
if [ -n "$cg" ] && ! grep -q "qgpt-quota-$$" "/proc/$server/cgroup"; then
  echo "FAIL: qgpt serve is not in $cg" >&2
  exit 1
fi
if ! grep -q "compute pool sized threads=1 " "$work/serve.log"; then
  echo "FAIL: the pool was not sized to one thread:" >&2
  cat "$work/serve.log" >&2
  exit 1
fi
echo "logged: $(grep -o 'compute pool sized threads=1' "$work/serve.log")"

"$qgpt" loadtest --addr "127.0.0.1:$port" --concurrency "$requests" --requests "$requests" \
  --prompt-tokens 4 --max-new-tokens 100 --json > "$work/loadtest.json" &
client=$!
pids+=("$client")
running() {
  "$py" -c 'import sys, urllib.request
body = urllib.request.urlopen(sys.argv[1], timeout=2).read().decode()
sys.exit(0 if "\nqgpt_running_requests 1\n" in "\n" + body else 1)' "http://127.0.0.1:$mport/metrics"
}
for _ in $(seq 500); do
  running && break
  sleep 0.01
done
running || { echo "FAIL: no stream was ever in flight" >&2; exit 1; }
start=$(date +%s.%N)
kill -TERM "$server"
rc=0
wait "$server" || rc=$?
took=$("$py" -c "import sys; print(round($(date +%s.%N) - $start, 3))")
wait "$client"
echo "SIGTERM with streams in flight: exit $rc after $took s"
[ "$rc" -eq 0 ] || { echo "FAIL: qgpt serve exited $rc" >&2; cat "$work/serve.log" >&2; exit 1; }
"$py" - "$work/loadtest.json" "$requests" "$took" "$budget" <<'PYEOF'
import json, sys
lt, n, took, budget = json.load(open(sys.argv[1])), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print(f"loadtest: {lt['ok']} of {lt['requests']} complete, errors {lt['errors']}")
assert lt["ok"] == n and not lt["errors"], "every in-flight and queued stream must finish"
assert took < budget, f"drain took {took} s, the grace period leaves {budget} s"
PYEOF
# The drain began with streams running or queued.
in_flight=$(sed -n 's/.*draining in_flight=\([0-9]*\).*/\1/p' "$work/serve.log")
echo "in flight at SIGTERM: ${in_flight:-none}"
[ "${in_flight:-0}" -ge 2 ] || { echo "FAIL: fewer than 2 requests in flight at SIGTERM" >&2; exit 1; }
echo ok
