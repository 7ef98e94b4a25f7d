#!/usr/bin/env python3
"""Static checks of the deployment files: `make k8s-check` runs this from the repository root.

1. Renders every kustomization (k8s/base, k8s/overlays/dev, k8s/overlays/prod, and the prod
   Secrets kustomization with its example env files filled in) with `kubectl kustomize`.
2. Validates each rendered object against the Kubernetes OpenAPI schemas of kubernetes-validate
   in strict mode (unknown fields are errors) for the oldest Kubernetes the manifests support
   (1.30: preStop `sleep`) and for the newest the package knows. The Prometheus Operator CRDs
   (ServiceMonitor, PrometheusRule) are not in those schemas: they are checked against small
   schemas below instead, and every alert expression is parsed as PromQL (promql-parser).
   Any other kind without a schema is an error.
3. Cross-checks each overlay's output: references to ConfigMaps, Secrets and their keys,
   Service selectors and target ports, probe ports, Ingress backends, HPA and PDB targets,
   ServiceMonitor ports, pod security settings, drain budget vs termination grace, replica
   counts vs NATS routes, MongoDB members and KV replicas; configuration variables against
   shared/config/src/vars.rs; the edges' relay listener (reachable from the other edges,
   advertised, a declared port); Ingress paths against the edge's routes; metric names in the
   alerts, the Grafana dashboard and docs/OPERATIONS.md against the metrics the services
   register; nats-server tests the rendered NATS configurations (`-t`) when one is installed,
   and `bash -n` the shell scripts in ConfigMaps.
4. deploy/compose.yaml: `docker-compose config` (Docker Compose itself, no engine needed) with
   deploy/.env.example, plus the variable, relay listener and drain checks above.
5. deploy/grafana-dashboard.json: parses, has a Prometheus datasource variable, and its
   queries are valid PromQL on metrics that exist.
6. deploy/Dockerfile: hadolint.

Tools are taken from the directory of the Python running this (the project's venv), except
kubectl (PATH, or KUBECTL). Exit status 0 when everything passes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jsonschema
import promql_parser
import yaml
from kubernetes_validate import utils as kv

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
K8S_VERSIONS = ["1.30.0", kv.latest_version()]
OVERLAYS = ["k8s/base", "k8s/overlays/dev", "k8s/overlays/prod"]
PROD_SECRETS = "k8s/overlays/prod/secrets"
# Health and metrics routes the edge serves on its public port that must stay internal.
INTERNAL_ROUTES = {"/health/live", "/health/ready", "/metrics"}

errors: list[str] = []


def fail(where: str, message: str) -> None:
    errors.append(f"{where}: {message}")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kw)


# --- facts read from the code ---------------------------------------------------------------


def config_variables() -> set[str]:
    """Every environment variable the binary reads (shared/config/src/vars.rs)."""
    text = (ROOT / "shared/config/src/vars.rs").read_text()
    names = set(re.findall(r'"([A-Z][A-Z0-9_]*)"', text))
    names.discard("P2PIANO_")
    if "COOKIE_SECRET" not in names or "P2PIANO_DRAIN_TIMEOUT_MS" not in names:
        fail("shared/config/src/vars.rs", "could not read the variable table")
    return names


def registered_metrics() -> dict[str, str]:
    """Metric families the services register: full name -> counter|gauge|histogram."""
    metrics: dict[str, str] = {}
    for path in sorted(ROOT.glob("services/*/src/**/*.rs")):
        text = path.read_text()
        fields = dict(re.findall(r"^\s*pub (\w+): (.+),\s*$", text, re.M))
        declared = [
            (name, field, fields.get(field, ""))
            for name, field in re.findall(
                r'register(?:_with_unit)?\(\s*"(\w+)",\s*"(?:[^"\\]|\\.)*",\s*(?:[\w:]+,\s*)?m\.(\w+)\.clone\(\)',
                text,
            )
        ]
        # Fields declared by `p2piano_telemetry::metric_set!`: `pub f: Type = init => ("name", ...)`.
        declared += [
            (name, field, kind)
            for field, kind, name in re.findall(
                r'pub (\w+): ([^=\n]+?) = [^\n]*\n\s*=> \(\s*"(\w+)"', text
            )
        ]
        for name, field, kind in declared:
            family = next((f for f in ("Histogram", "Counter", "Gauge") if f in kind), None)
            if family is None:
                fail(str(path.relative_to(ROOT)), f"metric {name}: unknown type of field {field}")
                continue
            metrics[f"p2piano_{name}"] = family.lower()
    if len(metrics) < 10:
        fail("services/*/src", f"found only {len(metrics)} registered metrics; the parser is out of date")
    return metrics


def series_names(metrics: dict[str, str]) -> set[str]:
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    return {name + s for name, kind in metrics.items() for s in suffixes[kind]}


def check_metric_refs(where: str, text: str, series: set[str]) -> int:
    refs = set(re.findall(r"\bp2piano_(?:edge|rooms|presence)_\w+", text))
    for ref in sorted(refs - series):
        fail(where, f"metric {ref} is not exported by any service")
    return len(refs)


def edge_routes() -> set[str]:
    routes: set[str] = set()
    for path in ROOT.glob("services/edge/src/**/*.rs"):
        if path.name == "tests.rs" or path.name.endswith("_tests.rs"):
            continue
        text = path.read_text().split("#[cfg(test)]")[0]
        routes.update(re.findall(r'\.route\(\s*"(/[^"]*)"', text))
        # The demo page's asset table: ("/path", CONTENT_TYPE, BODY).
        routes.update(re.findall(r'^\s*\("(/[^"]*)",\s*[A-Z]+,', text, re.M))
    admin = (ROOT / "shared/telemetry/src/admin.rs").read_text()
    routes.update(re.findall(r'\.route\(\s*"(/[^"]*)"', admin))
    if not {"/health", "/socket.io/"} <= routes or not INTERNAL_ROUTES <= routes:
        fail("services/edge/src", f"could not read the edge's routes (found {sorted(routes)})")
    return routes


# --- rendering and schema validation -------------------------------------------------------


def kustomize(path: Path) -> list[dict]:
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl") or "kubectl"
    out = run([kubectl, "kustomize", str(path)])
    if out.returncode != 0:
        fail(str(path), f"kubectl kustomize failed: {out.stderr.strip()}")
        return []
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object"},
                "namespaceSelector": {"type": "object"},
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "relabelings": {"type": "array", "items": {"type": "object"}},
                            "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                },
            },
        }
    },
}

PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string"},
                            "interval": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["alert", "expr"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h|d)$"},
                                        "labels": {
                                            "type": "object",
                                            "required": ["severity"],
                                            "properties": {"severity": {"enum": ["critical", "warning", "info"]}},
                                        },
                                        "annotations": {
                                            "type": "object",
                                            "required": ["summary"],
                                            "additionalProperties": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                }
            },
        }
    },
}

CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
}


def promql_error(expr: str) -> str | None:
    """The PromQL parser's complaint about `expr`, or None. Grafana's variables are given
    plausible values first."""
    expr = expr.replace("$__rate_interval", "5m").replace("$namespace", ".*")
    try:
        promql_parser.parse(expr)
    except ValueError as e:
        return str(e)
    return None


def validate_schemas(where: str, docs: list[dict]) -> None:
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        crd = CRD_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
        if crd is not None:
            try:
                jsonschema.validate(doc, crd)
            except jsonschema.ValidationError as e:
                fail(where, f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
            if doc["kind"] == "PrometheusRule":
                for group in doc["spec"]["groups"]:
                    for rule in group["rules"]:
                        problem = promql_error(rule["expr"])
                        if problem:
                            fail(where, f"{name}: alert {rule['alert']}: invalid PromQL: {problem}")
            continue
        for version in K8S_VERSIONS:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                fail(where, f"{name} (Kubernetes {e.version}): {'.'.join(map(str, e.path))}: {e.message}")
            except kv.SchemaNotFoundError as e:
                fail(where, f"{name}: {e.message} (and no CRD schema in deploy/check.py)")
                break


# --- cross-checks of one rendered overlay ------------------------------------------------------


def pod_spec(doc: dict) -> dict | None:
    kind = doc.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def matches(selector: dict, labels: dict) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        value = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


def env_of(container: dict, configmaps: dict[str, dict]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref and ref["name"] in configmaps:
            env.update(configmaps[ref["name"]].get("data") or {})
    for item in container.get("env") or []:
        env[item["name"]] = item.get("value", "<from " + next(iter(item.get("valueFrom", {"?": 0}))) + ">")
    return env


def expanded_names(env: dict[str, str]) -> set[str]:
    """Variables other values refer to as `$(NAME)`: set only to be expanded by Kubernetes
    (such as the pod's IP from the downward API), not configuration of p2piano."""
    return {n for v in env.values() for n in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(v))}


def check_mesh(where: str, name: str, env: dict[str, str], ports: set[int] | None) -> None:
    """An edge of these deployments runs beside other edges, in other pods or containers: its
    relay listener (P2PIANO_MESH_ADDR, default 127.0.0.1:0) must be on an address they reach,
    at a fixed port that the container declares (`ports`, None where there is no such list),
    and a wildcard address needs P2PIANO_MESH_ADVERTISE (the edge refuses to start without
    it), advertising that same port."""
    addr = env.get("P2PIANO_MESH_ADDR") or "127.0.0.1:0"
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if host in ("127.0.0.1", "::1", "localhost") or port in ("", "0"):
        fail(where, f"{name}: P2PIANO_MESH_ADDR {addr}: the other edges cannot reach its relay listener")
        return
    advertise = env.get("P2PIANO_MESH_ADVERTISE") or ""
    if not advertise:
        if host in ("0.0.0.0", "::"):
            fail(where, f"{name}: P2PIANO_MESH_ADDR {addr} is a wildcard and P2PIANO_MESH_ADVERTISE is unset")
    elif advertise.rpartition(":")[2] != port:
        fail(where, f"{name}: P2PIANO_MESH_ADVERTISE {advertise} does not name the listener's port {port}")
    if ports is not None and port.isdigit() and int(port) not in ports:
        fail(where, f"{name}: relay port {port} (P2PIANO_MESH_ADDR) is not a containerPort")


def cross_check(where: str, docs: list[dict], extra: list[dict], known_vars: set[str], routes: set[str]) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs + extra:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    configmaps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    workloads = [d for d in docs if pod_spec(d) is not None]
    services = by_kind.get("Service", {})

    def secret_keys(name: str) -> set[str]:
        s = secrets[name]
        return set((s.get("data") or {}).keys()) | set((s.get("stringData") or {}).keys())

    edge_drain_ms = None
    for w in workloads:
        wname = f"{w['kind']}/{w['metadata']['name']}"
        spec = pod_spec(w)
        labels = w["spec"]["template"]["metadata"].get("labels", {})
        if w["kind"] != "Job" and not matches(w["spec"]["selector"], labels):
            fail(where, f"{wname}: selector does not match its pod template")
        psc = spec.get("securityContext") or {}
        if not psc.get("runAsNonRoot"):
            fail(where, f"{wname}: pod securityContext.runAsNonRoot is not true")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            fail(where, f"{wname}: pod seccompProfile is not RuntimeDefault")
        for vol in spec.get("volumes") or []:
            if "configMap" in vol and vol["configMap"]["name"] not in configmaps:
                fail(where, f"{wname}: volume {vol['name']}: no ConfigMap {vol['configMap']['name']}")
            if "secret" in vol:
                sname = vol["secret"]["secretName"]
                if sname not in secrets:
                    fail(where, f"{wname}: volume {vol['name']}: no Secret {sname}")
                else:
                    for item in vol["secret"].get("items") or []:
                        if item["key"] not in secret_keys(sname):
                            fail(where, f"{wname}: volume {vol['name']}: Secret {sname} has no key {item['key']}")
        for c in (spec.get("initContainers") or []) + spec["containers"]:
            cname = f"{wname} container {c['name']}"
            csc = c.get("securityContext") or {}
            if csc.get("allowPrivilegeEscalation") is not False:
                fail(where, f"{cname}: allowPrivilegeEscalation is not false")
            if csc.get("readOnlyRootFilesystem") is not True:
                fail(where, f"{cname}: readOnlyRootFilesystem is not true")
            if (csc.get("capabilities") or {}).get("drop") != ["ALL"]:
                fail(where, f"{cname}: capabilities do not drop ALL")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(part) or {}):
                        fail(where, f"{cname}: no {part}.{r}")
            ports = {p["name"] for p in c.get("ports") or [] if "name" in p}
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                p = c.get(probe)
                if not p:
                    continue
                port = (p.get("httpGet") or p.get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    fail(where, f"{cname}: {probe} uses port {port}, which the container does not name")
            for source in c.get("envFrom") or []:
                ref = source.get("configMapRef") or source.get("secretRef")
                pool = configmaps if "configMapRef" in source else secrets
                if ref["name"] not in pool:
                    fail(where, f"{cname}: envFrom {ref['name']} does not exist")
            for item in c.get("env") or []:
                ref = (item.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    if ref["name"] not in secrets:
                        fail(where, f"{cname}: env {item['name']}: no Secret {ref['name']}")
                    elif ref["key"] not in secret_keys(ref["name"]):
                        fail(where, f"{cname}: env {item['name']}: Secret {ref['name']} has no key {ref['key']}")
                ref = (item.get("valueFrom") or {}).get("configMapKeyRef")
                if ref and ref["name"] not in configmaps:
                    fail(where, f"{cname}: env {item['name']}: no ConfigMap {ref['name']}")
            image = c.get("image", "")
            if image.split("/")[-1].startswith("p2piano"):
                env = env_of(c, configmaps)
                for var in env.keys() - expanded_names(env):
                    if var not in known_vars:
                        fail(where, f"{cname}: {var} is not a variable p2piano reads")
                role = (c.get("args") or ["?"])[0]
                for probe in ("readinessProbe", "livenessProbe"):
                    path = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
                    if path not in INTERNAL_ROUTES:
                        fail(where, f"{cname}: {probe} path {path} is not a health route")
                if role == "edge":
                    drain_ms = int(env.get("P2PIANO_DRAIN_TIMEOUT_MS", "20000"))
                    pre = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
                    grace = spec.get("terminationGracePeriodSeconds", 30)
                    edge_drain_ms = drain_ms
                    if grace <= pre + drain_ms / 1000:
                        fail(where, f"{cname}: terminationGracePeriodSeconds {grace} <= preStop {pre} s + drain {drain_ms} ms")
                    if "COOKIE_SECRET" not in env:
                        fail(where, f"{cname}: no COOKIE_SECRET")
                    check_mesh(where, cname, env, {p["containerPort"] for p in c.get("ports") or []})
                elif role in ("rooms", "presence"):
                    drain_ms = int(env.get("P2PIANO_DRAIN_TIMEOUT_MS", "20000"))
                    if spec.get("terminationGracePeriodSeconds", 30) <= drain_ms / 1000:
                        fail(where, f"{cname}: terminationGracePeriodSeconds is not above the drain budget")
                    if role == "rooms" and "MONGO_URI" not in env:
                        fail(where, f"{cname}: no MONGO_URI")
    if edge_drain_ms is None:
        fail(where, "no edge container found")

    # Services: selectors select pods, target ports exist on them.
    for sname, svc in services.items():
        sel = svc["spec"].get("selector") or {}
        pods = [w for w in workloads if w["kind"] != "Job" and matches({"matchLabels": sel}, w["spec"]["template"]["metadata"].get("labels", {}))]
        if not pods:
            fail(where, f"Service/{sname}: selects no workload")
            continue
        names = {p["name"] for w in pods for c in pod_spec(w)["containers"] for p in c.get("ports") or [] if "name" in p}
        for port in svc["spec"]["ports"]:
            tp = port.get("targetPort")
            if isinstance(tp, str) and tp not in names:
                fail(where, f"Service/{sname}: targetPort {tp} is not a named container port")
    for ing in by_kind.get("Ingress", {}).values():
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                backend = p["backend"]["service"]
                svc = services.get(backend["name"])
                if svc is None:
                    fail(where, f"Ingress/{ing['metadata']['name']}: no Service {backend['name']}")
                elif backend["port"].get("name") not in {x.get("name") for x in svc["spec"]["ports"]}:
                    fail(where, f"Ingress/{ing['metadata']['name']}: Service {backend['name']} has no port {backend['port']}")
        check_ingress_routes(where, ing, routes)
    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        ref = hpa["spec"]["scaleTargetRef"]
        target = by_kind.get(ref["kind"], {}).get(ref["name"])
        if target is None:
            fail(where, f"HPA/{hpa['metadata']['name']}: no {ref['kind']} {ref['name']}")
        elif "replicas" in target["spec"]:
            fail(where, f"HPA/{hpa['metadata']['name']}: {ref['kind']} {ref['name']} sets replicas, which fights the autoscaler")
    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        if not any(matches(pdb["spec"]["selector"], w["spec"]["template"]["metadata"].get("labels", {})) for w in workloads if w["kind"] != "Job"):
            fail(where, f"PDB/{pdb['metadata']['name']}: selects no workload")
    for sm in by_kind.get("ServiceMonitor", {}).values():
        selected = [s for s in services.values() if matches(sm["spec"]["selector"], s["metadata"].get("labels", {}))]
        if {s["metadata"]["name"] for s in selected} < {"edge", "rooms", "presence"}:
            fail(where, f"ServiceMonitor/{sm['metadata']['name']}: does not select edge, rooms and presence")
        for ep in sm["spec"]["endpoints"]:
            for s in selected:
                if ep["port"] not in {p.get("name") for p in s["spec"]["ports"]}:
                    fail(where, f"ServiceMonitor/{sm['metadata']['name']}: Service {s['metadata']['name']} has no port {ep['port']}")

    # Replica counts that must agree.
    sts = by_kind.get("StatefulSet", {})
    nats_replicas = sts.get("nats", {}).get("spec", {}).get("replicas", 1)
    mongo_replicas = sts.get("mongo", {}).get("spec", {}).get("replicas", 1)
    nats_conf = next((cm["data"].get("nats.conf", "") for n, cm in configmaps.items() if n.startswith("nats-config")), "")
    routes_listed = len(set(re.findall(r"nats://(nats-\d+)\.nats-headless:6222", nats_conf)))
    if nats_replicas > 1 and routes_listed != nats_replicas:
        fail(where, f"nats.conf lists {routes_listed} routes for {nats_replicas} NATS servers")
    if nats_replicas == 1 and "cluster" in re.sub(r"#.*", "", nats_conf):
        fail(where, "a single NATS server has a cluster block")
    config = next((cm["data"] for n, cm in configmaps.items() if n.startswith("p2piano-config")), {})
    kv_replicas = int(config.get("P2PIANO_KV_REPLICAS", "1"))
    if kv_replicas > nats_replicas:
        fail(where, f"P2PIANO_KV_REPLICAS={kv_replicas} but only {nats_replicas} NATS server(s)")
    uri_hosts = re.match(r"mongodb://([^/?]+)", config.get("MONGO_URI", "mongodb://"))
    uri_hosts = uri_hosts.group(1).split(",") if uri_hosts else []
    expected = [f"mongo-{i}.mongo:27017" for i in range(mongo_replicas)]
    if uri_hosts != expected:
        fail(where, f"MONGO_URI hosts {uri_hosts} != the {mongo_replicas} MongoDB member(s)")
    job = by_kind.get("Job", {}).get("mongo-init")
    if job:
        env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        if (env.get("MONGO_MEMBERS") or "").split(",") != expected:
            fail(where, f"Job mongo-init MONGO_MEMBERS {env.get('MONGO_MEMBERS')} != the {mongo_replicas} member(s)")


def check_nats_conf(where: str, docs: list[dict]) -> None:
    """nats-server's own check of the rendered configuration (`nats-server -t`), when a
    nats-server is at hand (the venv has one after `make test-servers`)."""
    server = BIN / "nats-server"
    server = str(server) if server.exists() else shutil.which("nats-server")
    if server is None:
        print(f"k8s-check: {where}: no nats-server to test nats.conf with (make test-servers installs one)")
        return
    for doc in docs:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("nats-config"):
            with tempfile.NamedTemporaryFile("w", suffix=".conf") as conf:
                conf.write(doc["data"]["nats.conf"])
                conf.flush()
                out = run([server, "-c", conf.name, "-t"], env={**os.environ, "POD_NAME": "nats-0"})
            if out.returncode != 0:
                fail(where, f"nats.conf: {(out.stderr or out.stdout).strip()}")


def check_scripts(where: str, docs: list[dict]) -> None:
    """`bash -n` on the shell scripts shipped in ConfigMaps (mongo-init.sh)."""
    for doc in docs:
        if doc["kind"] != "ConfigMap":
            continue
        for key, text in (doc.get("data") or {}).items():
            if key.endswith(".sh"):
                out = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
                if out.returncode != 0:
                    fail(where, f"{doc['metadata']['name']}/{key}: {out.stderr.strip()}")


def check_ingress_routes(where: str, ing: dict, routes: set[str]) -> None:
    """Every public edge route is reachable through the Ingress, no internal one is, and every
    Ingress path leads somewhere."""
    paths = [(p["path"], p["pathType"]) for r in ing["spec"]["rules"] for p in r["http"]["paths"]]

    def exposed(route: str) -> bool:
        concrete = re.sub(r"\{[^}]+\}", "x", route)
        for path, kind in paths:
            if kind == "Exact" and concrete == path:
                return True
            if kind == "Prefix" and (concrete == path or concrete.startswith(path.rstrip("/") + "/")):
                return True
        return False

    for route in sorted(routes):
        if route in INTERNAL_ROUTES:
            if exposed(route):
                fail(where, f"Ingress/{ing['metadata']['name']}: exposes internal route {route}")
        elif not exposed(route):
            fail(where, f"Ingress/{ing['metadata']['name']}: edge route {route} is not routed")
    for path, kind in paths:
        if not any(
            (kind == "Exact" and re.sub(r"\{[^}]+\}", "x", r) == path)
            or (kind == "Prefix" and (r == path or r.startswith(path.rstrip("/") + "/")))
            for r in routes
        ):
            fail(where, f"Ingress/{ing['metadata']['name']}: path {path} matches no edge route")


# --- compose, dashboard, docs, Dockerfile ----------------------------------------------------


def check_compose(known_vars: set[str]) -> None:
    where = "deploy/compose.yaml"
    compose = BIN / "docker-compose"
    out = run([str(compose), "-f", "deploy/compose.yaml", "--env-file", "deploy/.env.example", "config", "--format", "json"])
    if out.returncode != 0:
        fail(where, f"docker-compose config failed: {out.stderr.strip()}")
        return
    project = json.loads(out.stdout)
    services = project["services"]
    for name in ("nats", "mongo", "rooms", "presence", "edge-1", "edge-2", "lb"):
        if name not in services:
            fail(where, f"no service {name}")
    edge_ids = set()
    for name, svc in services.items():
        if not str(svc.get("image", "")).startswith("p2piano") and "build" not in svc:
            continue
        env = svc.get("environment") or {}
        for var in env:
            if var not in known_vars:
                fail(where, f"{name}: {var} is not a variable p2piano reads")
        drain = int(env.get("P2PIANO_DRAIN_TIMEOUT_MS") or 20000)
        grace = svc.get("stop_grace_period", "10s")
        seconds = int(re.match(r"(\d+)s$", grace).group(1)) if re.match(r"\d+s$", grace) else 0
        if seconds <= drain / 1000:
            fail(where, f"{name}: stop_grace_period {grace} is not above the drain budget {drain} ms")
        if svc.get("command", [None])[0] == "edge":
            edge_ids.add(env.get("P2PIANO_EDGE_ID"))
            check_mesh(where, name, env, None)
            host = (env.get("P2PIANO_MESH_ADVERTISE") or "").rpartition(":")[0]
            if host != name:
                fail(where, f"{name}: P2PIANO_MESH_ADVERTISE names host {host or '(none)'}, not this service")
    if len(edge_ids) != 2 or None in edge_ids:
        fail(where, f"the two edges need distinct P2PIANO_EDGE_IDs (got {edge_ids})")
    example = (ROOT / "deploy/.env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.M))
    for var in sorted(known_vars - listed):
        fail("deploy/.env.example", f"does not list {var}")
    cfg = (ROOT / "deploy/haproxy.cfg").read_text()
    for needle in ("/health/ready", "timeout tunnel", "balance leastconn", "acl internal path " + " ".join(sorted(INTERNAL_ROUTES))):
        if needle not in cfg:
            fail("deploy/haproxy.cfg", f"missing {needle!r}")
    for word in ("cookie ", "stick ", "balance source"):
        if re.search(rf"^\s*{word}", cfg, re.M):
            fail("deploy/haproxy.cfg", f"{word.strip()} would make clients sticky")


def check_dashboard(series: set[str]) -> None:
    where = "deploy/grafana-dashboard.json"
    try:
        dash = json.loads((ROOT / where).read_text())
    except (OSError, json.JSONDecodeError) as e:
        fail(where, f"not valid JSON: {e}")
        return
    if not 36 <= int(dash.get("schemaVersion", 0)) <= 41:
        fail(where, f"schemaVersion {dash.get('schemaVersion')} is not around 39")
    variables = (dash.get("templating") or {}).get("list") or []
    if not any(v.get("type") == "datasource" and v.get("query") == "prometheus" for v in variables):
        fail(where, "no Prometheus datasource variable")
    panels = dash.get("panels") or []
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)):
        fail(where, "panel ids are not unique")
    exprs = [t.get("expr", "") for p in panels for t in p.get("targets") or []]
    if not exprs:
        fail(where, "no queries")
    for e in exprs:
        problem = promql_error(e)
        if problem:
            fail(where, f"invalid PromQL ({problem}): {e}")
    check_metric_refs(where, "\n".join(exprs), series)
    used = set(re.findall(r"\bp2piano_(?:edge|rooms|presence)_\w+", "\n".join(exprs)))
    if len(used) < 12:
        fail(where, f"only {len(used)} series are charted")


def check_docs(series: set[str], metrics: dict[str, str]) -> None:
    """Prose may name a histogram by its family name as well as by its series."""
    path = ROOT / "docs/OPERATIONS.md"
    if not path.exists():
        fail("docs/OPERATIONS.md", "missing")
        return
    check_metric_refs("docs/OPERATIONS.md", path.read_text(), series | set(metrics))


def check_dockerfile() -> None:
    out = run([str(BIN / "hadolint"), "deploy/Dockerfile"])
    if out.returncode != 0:
        fail("deploy/Dockerfile", "hadolint:\n" + (out.stdout + out.stderr).strip())


def prod_secrets() -> list[dict]:
    """The prod Secrets kustomization, rendered from its example env files with values."""
    src = ROOT / PROD_SECRETS
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "secrets"
        dst.mkdir()
        shutil.copy(src / "kustomization.yaml", dst)
        for example in src.glob("*.env.example"):
            lines = []
            for line in example.read_text().splitlines():
                if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=$", line):
                    line += "x" * 40
                lines.append(line)
            (dst / example.name.removesuffix(".example")).write_text("\n".join(lines) + "\n")
        return kustomize(dst)


def main() -> int:
    started = time.monotonic()
    known_vars = config_variables()
    metrics = registered_metrics()
    series = series_names(metrics)
    routes = edge_routes()
    secrets = prod_secrets()
    validate_schemas(PROD_SECRETS, secrets)
    if sorted(d["metadata"]["name"] for d in secrets) != ["mongo-secrets", "p2piano-secrets"]:
        fail(PROD_SECRETS, "does not render exactly Secrets p2piano-secrets and mongo-secrets")
    counted = 0
    for overlay in OVERLAYS:
        docs = kustomize(ROOT / overlay)
        counted += len(docs)
        validate_schemas(overlay, docs)
        has_secrets = any(d["kind"] == "Secret" for d in docs)
        if overlay.endswith("prod") and has_secrets:
            fail(overlay, "renders Secrets (the placeholders must not reach production)")
        extra = secrets if overlay.endswith("prod") else []
        cross_check(overlay, docs, extra, known_vars, routes)
        check_nats_conf(overlay, docs)
        check_scripts(overlay, docs)
        for doc in docs:
            if doc["kind"] == "PrometheusRule":
                check_metric_refs(f"{overlay} PrometheusRule", json.dumps(doc["spec"]), series)
    check_compose(known_vars)
    check_dashboard(series)
    check_docs(series, metrics)
    check_dockerfile()
    elapsed = time.monotonic() - started
    if errors:
        print(f"k8s-check: {len(errors)} problem(s):", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    print(
        f"k8s-check: ok: {len(OVERLAYS)} overlays + prod secrets ({counted} objects) valid for Kubernetes "
        f"{' and '.join(v.rsplit('.', 1)[0] for v in K8S_VERSIONS)}; compose, dashboard, "
        f"{len(metrics)} metrics, Dockerfile checked in {elapsed:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
