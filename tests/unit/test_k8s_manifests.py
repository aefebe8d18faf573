"""deploy/k8s agrees with the code: rules, funnels, health paths, settings, selectors.

Schema validity is kubeconform's job (deploy/k8s/validate.sh, `make k8s-check`, CI);
these tests check what a schema cannot: that the manifests fit this worker.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from stream.config import Settings
from stream.ops.rules import render_rules

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "k8s" / "base"


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]


def by_kind() -> dict[str, list[dict]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    out: dict[str, list[dict]] = {}
    for name in kustomization["resources"]:
        for doc in docs(name):
            out.setdefault(doc["kind"], []).append(doc)
    return out


def setting_names() -> set[str]:
    """Every FUNNEL_* variable Settings.from_env reads."""
    source = (REPO / "stream" / "config.py").read_text()
    return {f"FUNNEL_{n}" for n in re.findall(r'_env(?:_int|_float)?\(\s*"([A-Z_]+)"', source)}


def test_prometheus_rule_is_the_generated_rules():
    committed = (BASE / "prometheusrule.yaml").read_text()
    assert committed == render_rules(Settings(), kubernetes=True), (
        "deploy/k8s/base/prometheusrule.yaml is stale: regenerate with "
        "`funnel rules --kubernetes > deploy/k8s/base/prometheusrule.yaml`"
    )
    rule = yaml.safe_load(committed)
    local = yaml.safe_load((REPO / "deploy/prometheus/rules/funnel.yml").read_text())
    assert rule["spec"]["groups"] == local["groups"]


def test_funnel_definitions_are_the_packaged_ones():
    assert (BASE / "funnels.toml").read_text() == (REPO / "stream/core/funnels.toml").read_text(), (
        "deploy/k8s/base/funnels.toml differs from stream/core/funnels.toml: copy it over"
    )


def test_every_configured_variable_is_a_real_setting():
    known = setting_names()
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    literals = [
        lit.split("=", 1)[0]
        for gen in kustomization["configMapGenerator"]
        for lit in gen.get("literals", [])
    ]
    overlay = yaml.safe_load((REPO / "deploy/k8s/overlays/secured/kustomization.yaml").read_text())
    literals += [
        lit.split("=", 1)[0] for gen in overlay["configMapGenerator"] for lit in gen["literals"]
    ]
    kinds = by_kind()
    containers = [
        c
        for kind in ("StatefulSet", "Job", "Deployment")
        for d in kinds[kind]
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    env = [e["name"] for c in containers for e in c.get("env", [])]
    names = {n for n in literals + env if n.startswith("FUNNEL_")}
    assert names and names <= known, f"not read by stream/config.py: {sorted(names - known)}"


def test_probes_and_ports_point_at_the_worker():
    from stream.api.routes import ROUTES

    pages = {route.path for route in ROUTES}
    (sts,) = by_kind()["StatefulSet"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready" in pages
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live" in pages
    env = {e["name"]: e.get("value") for e in container["env"]}
    (port,) = container["ports"]
    assert str(port["containerPort"]) == env["FUNNEL_WEB_PORT"]
    # Bound to all interfaces in the pod, advertised by the pod's stable DNS name.
    assert env["FUNNEL_WEB_BIND"] == "0.0.0.0"
    assert env["FUNNEL_WEB_ADVERTISE"].startswith(f"$(POD_NAME).{sts['spec']['serviceName']}.")
    # Table state on the per-pod volume.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claims = [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]]
    assert env["FUNNEL_DATA_DIR"].startswith(mounts[claims[0]])
    assert env["FUNNEL_FUNNELS"].startswith(mounts["definitions"])
    assert sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


def test_selectors_match_the_worker_pods():
    kinds = by_kind()
    (sts,) = kinds["StatefulSet"]
    labels = sts["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict) -> bool:
        return selector and all(labels.get(k) == v for k, v in selector.items())

    assert selects(sts["spec"]["selector"]["matchLabels"])
    services = {s["metadata"]["name"]: s for s in kinds["Service"]}
    headless = services[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    (collector,) = kinds["Deployment"]
    collector_labels = collector["spec"]["template"]["metadata"]["labels"]
    for name, service in services.items():
        selector = service["spec"]["selector"]
        if name == "funnel-collector":
            assert all(collector_labels.get(k) == v for k, v in selector.items())
        else:
            assert selects(selector), name
    (pdb,) = kinds["PodDisruptionBudget"]
    assert selects(pdb["spec"]["selector"]["matchLabels"])
    (monitor,) = kinds["PodMonitor"]
    assert selects(monitor["spec"]["selector"]["matchLabels"])
    ports = {p["name"] for p in sts["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports


def test_the_collector_is_reachable_and_keyed():
    (deployment,) = by_kind()["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["collector"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    (port,) = container["ports"]
    assert str(port["containerPort"]) == env["FUNNEL_COLLECTOR_PORT"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    # Bound beyond loopback, so it needs write keys (it refuses to start without).
    assert env["FUNNEL_COLLECTOR_BIND"] == "0.0.0.0"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["FUNNEL_COLLECTOR_KEYS"].startswith(mounts["keys"])
    services = {s["metadata"]["name"]: s for s in by_kind()["Service"]}
    assert env["FUNNEL_COLLECTOR_LEASE_URL"].startswith("http://funnel-api:6066/")
    assert "funnel-api" in services


@pytest.mark.parametrize("name", ["statefulset.yaml", "topics-job.yaml", "collector.yaml"])
def test_pods_run_as_non_root(name):
    doc = next(d for d in docs(name) if "template" in d["spec"])
    pod = doc["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
