#!/usr/bin/env python3
"""Consistency of deploy/ with the code: the rendered Kubernetes manifests, the examples and the
Dockerfile use only flags and environment variables that `qgpt serve --help` lists, the ports and
gRPC service names the server uses, metric names qgpt exports, requests equal to limits, and a
grace period longer than preStop plus the drain timeout; the PrometheusRule carries exactly the
rules of deploy/prometheus/alerts.yml.

Usage: check.py QGPT_BINARY RENDERED.yaml        (run by .ci/run, after `kubectl kustomize`)
       check.py --fix                           (rewrite the PrometheusRule from alerts.yml)
"""

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
RULE = ROOT / "deploy/k8s/components/monitoring/prometheusrule.yaml"
EXAMPLES = sorted((ROOT / "deploy/k8s/examples").glob("*.yaml"))
DOCKERFILE = ROOT / "deploy/Dockerfile"

failures = []


def fail(msg):
    failures.append(msg)


class IndentedDumper(yaml.SafeDumper):
    """Block sequences indented under their key, as yamllint's default expects."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def rule_document():
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "qgpt", "labels": {"app.kubernetes.io/name": "qgpt"}},
        "spec": {"groups": groups},
    }
    header = (
        "# Generated from deploy/prometheus/alerts.yml by `python3 tests/deploy/check.py --fix`;"
        " edit that file.\n"
    )
    return header + yaml.dump(doc, Dumper=IndentedDumper, sort_keys=False, width=100)


def exported_metrics():
    """Metric names from src/metrics.rs, with the series a histogram adds."""
    src = (ROOT / "src/metrics.rs").read_text()
    names = set(re.findall(r'pub const [A-Z_]+: &str = "(qgpt_[a-z_]+)";', src))
    return names | {n + s for n in names for s in ("_bucket", "_sum", "_count")}


def dockerfile_env():
    """The ENV settings of the Dockerfile's final stage."""
    final = DOCKERFILE.read_text().split("\nFROM ")[-1]
    env = {}
    for block in re.findall(r"^ENV (.*?)(?<!\\)$", final, re.M | re.S):
        env.update(re.findall(r"(QGPT_[A-Z_]+)=(\S+)", block))
    return env


def serve_help(binary):
    out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, check=True)
    text = out.stdout
    envs = set(re.findall(r"\[env: ([A-Z_]+)=", text))
    flags = set(re.findall(r"(--[a-z][a-z0-9-]*)", text))
    defaults, flag = {}, None
    for line in text.splitlines():
        m = re.match(r"\s+(?:-\w, )?(--[a-z][a-z0-9-]*)", line)
        if m:
            flag = m.group(1)
        d = re.search(r"\[default: ([^\]]+)\]", line)
        if d and flag:
            defaults[flag] = d.group(1)
    return text, envs, flags, defaults


def grpc_service_name():
    proto = (ROOT / "proto/qgpt/v1/generation.proto").read_text()
    package = re.search(r"^package ([\w.]+);", proto, re.M).group(1)
    service = re.search(r"^service (\w+)", proto, re.M).group(1)
    return f"{package}.{service}"


def check_env_names(where, names, envs, help_text):
    for name in names:
        if name.startswith("QGPT_"):
            if name not in envs:
                fail(f"{where}: {name} is not an environment variable of `qgpt serve --help`")
        elif name == "RUST_LOG":
            if "RUST_LOG" not in help_text:
                fail(f"{where}: RUST_LOG is not mentioned by `qgpt serve --help`")
        else:
            fail(f"{where}: {name} is not a qgpt setting")


def check_metrics_text(where, text, known):
    for name in re.findall(r"\bqgpt_[a-z_]+", text):
        if name not in known:
            fail(f"{where}: {name} is not a metric qgpt exports")


def check_manifests(binary, rendered):
    help_text, envs, flags, defaults = serve_help(binary)
    docs = [d for d in yaml.safe_load_all(Path(rendered).read_text()) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    known_metrics = exported_metrics()
    service_name = grpc_service_name()

    for d in docs:
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") in (None, "default"):
            fail(f"{d['kind']} {d['metadata']['name']}: no namespace, or the default one")

    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in by_kind.get("ConfigMap", [])}
    for name, data in configmaps.items():
        check_env_names(f"ConfigMap {name}", data.keys(), envs, help_text)

    (deploy,) = by_kind["Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    (qgpt,) = [c for c in pod["containers"] if c["name"] == "qgpt"]
    env = {}
    for src in qgpt.get("envFrom", []):
        ref = src.get("configMapRef", {}).get("name")
        if ref not in configmaps:
            fail(f"Deployment: envFrom names ConfigMap {ref}, which is not rendered")
        env.update(configmaps.get(ref, {}))
    for e in qgpt.get("env", []):
        env[e["name"]] = e.get("value")
    check_env_names("Deployment env", [e["name"] for e in qgpt.get("env", [])], envs, help_text)
    for arg in qgpt.get("args", []) + qgpt.get("command", [])[1:]:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and flag not in flags:
            fail(f"Deployment args: {flag} is not a flag of `qgpt serve --help`")

    # Ports: the container's named ports are the ports qgpt listens on (the ConfigMap's value,
    # else the image's ENV, else the flag's default).
    image_env = dockerfile_env()
    ports = {p["name"]: p["containerPort"] for p in qgpt["ports"]}

    def setting(var, flag):
        return int(env.get(var, image_env.get(var, defaults.get(flag, "0"))))

    grpc_port = setting("QGPT_PORT", "--port")
    metrics_port = setting("QGPT_METRICS_PORT", "--metrics-port")
    if ports.get("grpc") != grpc_port:
        fail(f"Deployment: port grpc is {ports.get('grpc')}, qgpt listens on {grpc_port}")
    if ports.get("metrics") != metrics_port:
        fail(f"Deployment: port metrics is {ports.get('metrics')}, qgpt serves metrics on {metrics_port}")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = qgpt.get(probe)
        if not p or "grpc" not in p:
            fail(f"Deployment: {probe} is not a gRPC probe")
            continue
        if p["grpc"]["port"] != grpc_port:
            fail(f"Deployment: {probe} probes port {p['grpc']['port']}, not {grpc_port}")
        if p["grpc"].get("service", "") not in ("", service_name):
            fail(f"Deployment: {probe} asks for service {p['grpc']['service']!r}; qgpt reports '' and {service_name}")
    for svc in by_kind["Service"]:
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            if isinstance(target, str) and target not in ports:
                fail(f"Service {svc['metadata']['name']}: targetPort {target} is no container port")
            if isinstance(target, int) and target not in ports.values():
                fail(f"Service {svc['metadata']['name']}: targetPort {target} is no container port")
    for np in by_kind.get("NetworkPolicy", []):
        for rule in np["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                if p["port"] not in ports and p["port"] not in ports.values():
                    fail(f"NetworkPolicy: port {p['port']} is no container port")

    # Resources: requests = limits in every container, init containers included (Guaranteed
    # QoS; the CPU limit sizes qgpt's pool).
    for c in pod["containers"] + pod.get("initContainers", []):
        r = c.get("resources", {})
        for res in ("cpu", "memory"):
            if res not in r.get("limits", {}):
                fail(f"container {c['name']}: no {res} limit")
        if r.get("requests") != r.get("limits"):
            fail(f"container {c['name']}: requests differ from limits")

    # Selectors: every Service, the PodDisruptionBudget and the NetworkPolicy select the pods;
    # the HorizontalPodAutoscaler scales this Deployment.
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]

    def selects(selector, labels):
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    if not selects(deploy["spec"]["selector"]["matchLabels"], pod_labels):
        fail("Deployment: its selector does not match its pod labels")
    for svc in by_kind["Service"]:
        if not selects(svc["spec"].get("selector"), pod_labels):
            fail(f"Service {svc['metadata']['name']}: selects no qgpt pod")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not selects(pdb["spec"]["selector"].get("matchLabels"), pod_labels):
            fail("PodDisruptionBudget: selects no qgpt pod")
    for np in by_kind.get("NetworkPolicy", []):
        if not selects(np["spec"]["podSelector"].get("matchLabels"), pod_labels):
            fail("NetworkPolicy: applies to no qgpt pod")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) != ("Deployment", deploy["metadata"]["name"]):
            fail(f"HorizontalPodAutoscaler: scales {ref['kind']} {ref['name']}")
    if "replicas" in deploy["spec"] and by_kind.get("HorizontalPodAutoscaler"):
        fail("Deployment: sets replicas, which a re-apply would reset under the autoscaler")

    # Termination: grace > preStop + drain timeout.
    grace = pod.get("terminationGracePeriodSeconds", 30)
    pre_stop = qgpt.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    drain = int(env.get("QGPT_DRAIN_TIMEOUT_S", defaults.get("--drain-timeout-s", "30")))
    if not grace > pre_stop + drain:
        fail(f"terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain {drain}")
    print(f"grace {grace} s, preStop {pre_stop} s, drain timeout {drain} s")

    # Monitoring: the ServiceMonitor scrapes the Service port that carries /metrics; the rules
    # are alerts.yml's.
    for sm in by_kind.get("ServiceMonitor", []):
        chosen = [
            s for s in by_kind["Service"]
            if selects(sm["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))
        ]
        for ep in sm["spec"]["endpoints"]:
            if ep.get("path", "/metrics") != "/metrics":
                fail(f"ServiceMonitor: path {ep['path']} is not /metrics")
            scraped = [s for s in chosen if any(p["name"] == ep["port"] for p in s["spec"]["ports"])]
            if not scraped:
                fail(f"ServiceMonitor: no Service it selects has port {ep['port']}")
            for s in scraped:
                (port,) = [p for p in s["spec"]["ports"] if p["name"] == ep["port"]]
                if ports.get(port["targetPort"], port["targetPort"]) != metrics_port:
                    fail(f"ServiceMonitor: port {ep['port']} does not lead to the metrics port")
    for rule in by_kind.get("PrometheusRule", []):
        if rule["spec"]["groups"] != yaml.safe_load(ALERTS.read_text())["groups"]:
            fail("PrometheusRule differs from deploy/prometheus/alerts.yml (run check.py --fix)")
        check_metrics_text("PrometheusRule", yaml.safe_dump(rule), known_metrics)
    if RULE.read_text() != rule_document():
        fail(f"{RULE.relative_to(ROOT)} is stale (run tests/deploy/check.py --fix)")
    for ex in EXAMPLES:
        check_metrics_text(str(ex.relative_to(ROOT)), ex.read_text(), known_metrics)

    # The image's own defaults.
    docker = DOCKERFILE.read_text()
    check_env_names("Dockerfile", image_env.keys(), envs, help_text)
    if image_env.get("QGPT_MODEL") != "/models/model.gguf":
        fail("Dockerfile: QGPT_MODEL is not /models/model.gguf")
    mounts = {m["mountPath"] for m in qgpt.get("volumeMounts", []) if m.get("readOnly")}
    if "/models" not in mounts:
        fail("Deployment: /models is not mounted read-only")
    for port in (grpc_port, metrics_port):
        if not re.search(rf"^EXPOSE .*\b{port}\b", docker, re.M):
            fail(f"Dockerfile: port {port} is not exposed")
    print(f"{len(docs)} objects, {len(EXAMPLES)} examples and the Dockerfile checked")


def main():
    if sys.argv[1:] == ["--fix"]:
        RULE.write_text(rule_document())
        print(f"wrote {RULE.relative_to(ROOT)}")
        return
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    check_manifests(sys.argv[1], sys.argv[2])
    if failures:
        sys.exit("FAIL:\n  " + "\n  ".join(failures))
    print("ok")


if __name__ == "__main__":
    main()
