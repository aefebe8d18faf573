"""Static checks of deploy files that need no running services."""

from __future__ import annotations

import json
import re
import shutil
import string
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
promtool = shutil.which("promtool")
amtool = shutil.which("amtool")


def test_compose_has_the_whole_stack_with_health_checks():
    services = COMPOSE["services"]
    expected = {"kafka", "redis", "prometheus", "alertmanager", "grafana", "worker", "demo"}
    assert expected <= set(services)
    for name in expected - {"demo"}:
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    assert (
        "KRaft" in (REPO / "docker-compose.yml").read_text()
        or services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    )


def test_compose_ports_are_loopback_only():
    for name, svc in COMPOSE["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_dependencies_and_volumes_exist():
    services = COMPOSE["services"]
    named_volumes = set(COMPOSE.get("volumes", {}))
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        if "build" in svc:
            context = REPO / (
                svc["build"] if isinstance(svc["build"], str) else svc["build"]["context"]
            )
            assert (context / "Dockerfile").is_file(), f"{name}: no Dockerfile in {context}"
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in named_volumes, f"{name} uses undeclared volume {source}"


def test_grafana_dashboards_are_valid_json_with_queries():
    dashboards = list((REPO / "deploy/grafana/dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        board = json.loads(path.read_text())
        exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
        assert exprs, f"{path.name} has no queries"


@pytest.mark.skipif(promtool is None, reason="promtool not installed (apt-get install prometheus)")
def test_prometheus_rules_check_and_unit_tests_pass():
    rules = sorted(str(p) for p in (REPO / "deploy/prometheus/rules").glob("*.yml"))
    check = subprocess.run([promtool, "check", "rules", *rules], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = sorted(str(p) for p in (REPO / "deploy/prometheus/tests").glob("*.yml"))
    run = subprocess.run(
        [promtool, "test", "rules", *tests], capture_output=True, text=True, cwd=REPO
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.skipif(promtool is None, reason="promtool not installed")
def test_compose_prometheus_config_is_valid(tmp_path):
    # The compose file mounts rules at /etc/prometheus/rules; point them at the repo copy.
    cfg = (REPO / "deploy/prometheus/prometheus.yml").read_text()
    cfg = cfg.replace("/etc/prometheus/rules", str(REPO / "deploy/prometheus/rules"))
    path = tmp_path / "prometheus.yml"
    path.write_text(cfg)
    run = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.skipif(amtool is None, reason="amtool not installed")
def test_alertmanager_configs_are_valid(tmp_path):
    local = string.Template((REPO / "deploy/local/alertmanager.yml").read_text())
    rendered = tmp_path / "local.yml"
    rendered.write_text(local.substitute(webhook_url="http://127.0.0.1:5001/alerts"))
    for path in (REPO / "deploy/alertmanager/alertmanager.yml", rendered):
        run = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr


def test_committed_rules_are_the_generated_defaults():
    from stream.config import Settings
    from stream.ops.rules import render_rules

    committed = (REPO / "deploy/prometheus/rules/funnel.yml").read_text()
    assert committed == render_rules(Settings()), (
        "deploy/prometheus/rules/funnel.yml is stale: regenerate it with "
        "`funnel rules > deploy/prometheus/rules/funnel.yml` with no FUNNEL_ALERT_* set"
    )


def test_alert_settings_reach_the_rules():
    from stream.config import Settings
    from stream.ops.rules import render_rules

    rules = yaml.safe_load(
        render_rules(Settings(alert_short_window="1m", alert_drop=0.7, alert_min_volume=20))
    )
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert set(alerts) == {
        "FunnelDropOffSpike",
        "FunnelNoEvents",
        "FunnelConsumerLagHigh",
        "FunnelRejectedEventsHigh",
        "FunnelWorkerDown",
        "FunnelTrackingPoolExhausted",
    }
    expr = alerts["FunnelDropOffSpike"]["expr"]
    assert 'window="1m"' in expr and "< 0.3" in expr and ">= 20" in expr
    for alert in alerts.values():
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


def test_committed_grafana_files_are_the_generated_ones(tmp_path):
    from stream.config import Settings
    from stream.ops.grafana import write_all

    for path in write_all(tmp_path, Settings()):
        committed = REPO / "deploy/grafana" / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `funnel grafana` with no FUNNEL_ALERT_* set"
        )


def test_dashboards_use_only_defined_variables_and_recorded_ratios():
    from stream.ops.grafana import dashboards

    boards = dashboards()
    assert set(boards) == {
        "funnel-overview",
        "funnel-channels",
        "funnel-sales",
        "funnel-money",
        "funnel-ops",
    }
    for board in boards.values():
        defined = {v["name"] for v in board["templating"]["list"]}
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            for target in panel["targets"]:
                used = set(re.findall(r"\$(\w+)", target["expr"] + panel["title"]))
                assert used <= defined, (board["uid"], panel["title"], used - defined)
                # Ratios come from recording rules (sums over workers), never computed per worker.
                assert " / " not in target["expr"], (board["uid"], panel["title"])
