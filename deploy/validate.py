#!/usr/bin/env python3
"""Checks one rendered overlay (the output of `kubectl kustomize`).

Run by deploy/check with kubernetes-validate on PYTHONPATH:

  validate.py RENDERED.yaml --coordinator BIN -k 1.29.0 -k 1.37.0

1. Core kinds: `kubernetes-validate --strict` for every Kubernetes version
   given; a missing schema is an error (a typo in apiVersion or kind).
2. KEDA ScaledObjects (a CRD, unknown to kubernetes-validate): strictly
   against deploy/schemas/keda-scaledobject.json, then against the swarm's
   real names: each targets a worker pool of the render, and has exactly one
   nats-jetstream trigger per skill of the pool, on the stream and durable
   consumer that `coordinator permissions` (generated from proto's wire
   names) lets that pool pull from.
3. Workloads: the restricted security context, probes on /healthz and
   /readyz at the http port, resources, and a termination grace period
   longer than the worker's drain grace plus one ack window.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
CRDS = {("keda.sh/v1alpha1", "ScaledObject"): "schemas/keda-scaledobject.json"}
NEXT = re.compile(r"^\$JS\.API\.CONSUMER\.MSG\.NEXT\.([^.]+)\.(skill-[^.]+)$")

errors = []


def error(where, msg):
    errors.append(f"{where}: {msg}")


def seconds(text):
    """`90s`, `5m`, `1h30m`, or a number of seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total, rest = 0.0, text
    for n, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text):
        total += float(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
        rest = rest.replace(n + unit, "", 1)
    if rest:
        raise ValueError(f"not a duration: {text}")
    return total


def core(docs, path, versions):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)
        name = f.name
    try:
        cmd = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
        for v in versions:
            cmd += ["-k", v]
        out = subprocess.run(cmd + [name], capture_output=True, text=True)
        text = (out.stdout + out.stderr).replace(name, path)
        for line in text.splitlines():
            if line.startswith(("ERROR", "WARN", "INVALID")) or "Couldn't find schema" in line:
                error(path, line)
        if out.returncode != 0 and not errors:
            error(path, f"kubernetes-validate exited {out.returncode}: {text}")
    finally:
        os.unlink(name)


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def pool_queues(coordinator, skills):
    """(stream, consumer) of each skill, as the generated permissions name them."""
    out = subprocess.run(
        [coordinator, "permissions", "--role", "worker", "--name", "x", "--skills",
         ",".join(skills), "--format", "json"],
        capture_output=True, text=True, check=True)
    allow = json.loads(out.stdout)["permissions"]["publish"]["allow"]
    return {m.group(1, 2) for s in allow if (m := NEXT.match(s))}


def scaled_objects(docs, path, coordinator, workloads):
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        where = f"{path}: {doc['kind']}/{doc['metadata'].get('name')}"
        with open(os.path.join(HERE, CRDS[key])) as f:
            schema = json.load(f)
        for e in jsonschema.Draft7Validator(schema).iter_errors(doc):
            error(where, f"{'/'.join(map(str, e.absolute_path))}: {e.message}")
        if key != ("keda.sh/v1alpha1", "ScaledObject"):
            continue
        ref = doc["spec"]["scaleTargetRef"]
        target = workloads.get((ref.get("kind", "Deployment"), ref["name"]))
        if target is None:
            error(where, f"scales {ref.get('kind')}/{ref['name']}, which is not in the render")
            continue
        container = target["spec"]["template"]["spec"]["containers"][0]
        skills = [s for s in (env_of(container).get("CASCADE_SKILLS") or "").split(",") if s]
        if not skills:
            error(where, "its target has no CASCADE_SKILLS")
            continue
        want = pool_queues(coordinator, skills)
        got = set()
        for t in doc["spec"]["triggers"]:
            if t["type"] != "nats-jetstream":
                error(where, f"trigger type {t['type']}: expected nats-jetstream")
                continue
            m = t["metadata"]
            got.add((m.get("stream"), m.get("consumer")))
            if not m.get("natsServerMonitoringEndpoint", "").endswith(":8222"):
                error(where, "natsServerMonitoringEndpoint is not the monitoring port 8222")
            if m.get("account") != "CASCADE":
                error(where, "account is not CASCADE (the account of deploy/nats/values-*.yaml)")
        if got != want:
            error(where, f"triggers on {sorted(got)}; the pool's skills are pulled from "
                         f"{sorted(want)}")


def workloads_ok(workloads, path):
    for (kind, name), doc in workloads.items():
        where = f"{path}: {kind}/{name}"
        pod = doc["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        if not psc.get("runAsNonRoot") or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            error(where, "pod securityContext: runAsNonRoot and seccomp RuntimeDefault required")
        if pod.get("automountServiceAccountToken") is not False:
            error(where, "automountServiceAccountToken must be false")
        mounts_needed = {"/tmp", "/work"}
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
                    and sc.get("capabilities", {}).get("drop") == ["ALL"]):
                error(where, f"container {c['name']}: read-only root, no privilege escalation, "
                             "drop ALL capabilities required")
            mounted = {m["mountPath"] for m in c.get("volumeMounts", [])}
            if not mounts_needed <= mounted:
                error(where, f"container {c['name']}: writable /tmp and /work (emptyDir) required")
            for probe, path_ in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                got = c.get(probe, {}).get("httpGet", {})
                if got.get("path") != path_ or got.get("port") != "http":
                    error(where, f"container {c['name']}: {probe} must GET {path_} on port http")
            if not any(p.get("containerPort") == 9090 and p.get("name") == "http"
                       for p in c.get("ports", [])):
                error(where, f"container {c['name']}: port 9090 named http required")
            res = c.get("resources", {})
            if not (res.get("requests") and res.get("limits")):
                error(where, f"container {c['name']}: resource requests and limits required")
            env = env_of(c)
            if "CASCADE_GRACE" in env:
                need = seconds(env["CASCADE_GRACE"]) + 30
                if pod.get("terminationGracePeriodSeconds", 30) <= need:
                    error(where, f"terminationGracePeriodSeconds must exceed CASCADE_GRACE + "
                                 f"the 30s ack window ({need:.0f}s)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered")
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("-k", "--kubernetes-version", action="append", required=True)
    a = ap.parse_args()
    with open(a.rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    crds = [d for d in docs if (d.get("apiVersion"), d.get("kind")) in CRDS]
    others = [d for d in docs if (d.get("apiVersion"), d.get("kind")) not in CRDS]
    workloads = {(d["kind"], d["metadata"]["name"]): d for d in others
                 if d["kind"] in ("Deployment", "StatefulSet")}
    core(others, a.rendered, a.kubernetes_version)
    scaled_objects(crds, a.rendered, a.coordinator, workloads)
    workloads_ok(workloads, a.rendered)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    print(f"{a.rendered}: {len(docs)} objects, {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
