"""A broken checkout pages someone: demo -> worker -> Prometheus rules -> Alertmanager -> webhook.

Everything is real: the demo producer sends a normal shop funnel, then the
checkout step's conversion drops to 5 %; the real Prometheus scrapes the real
worker and evaluates the generated rules (short windows set by configuration),
and the real Alertmanager posts FunnelDropOffSpike to a webhook this test runs.
No drop-off alert may fire during the normal phase.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stream.ops.stack import Stack
from tests.support import (
    REPO,
    TEST_ENV,
    WorkerProcess,
    free_port,
    prometheus_query,
    settings_for,
    unique_env,
    wait_for,
)

pytestmark = pytest.mark.integration

NORMAL_S = 100  # the drop starts after this many seconds of normal traffic
ALERT_ENV = {
    "FUNNEL_BUCKET": "10",  # windows of a minute need buckets well below a minute
    "FUNNEL_METRIC_WINDOWS": "1m,10m",
    "FUNNEL_ALERT_SHORT_WINDOW": "1m",
    "FUNNEL_ALERT_LONG_WINDOW": "10m",
    "FUNNEL_ALERT_MIN_VOLUME": "30",
    "FUNNEL_ALERT_FOR": "10s",
    "FUNNEL_ALERT_DROP": "0.5",
}


class Receiver:
    """The webhook end of Alertmanager: keeps every alert it is sent."""

    def __init__(self, url: str) -> None:
        host_port = url.split("//", 1)[1].split("/", 1)[0]
        host, port = host_port.split(":")
        alerts: list[dict] = []
        self.alerts = alerts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                alerts.extend(json.loads(body).get("alerts", []))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, int(port)), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def firing(self, name: str) -> list[dict]:
        return [
            a
            for a in self.alerts
            if a["labels"].get("alertname") == name and a.get("status") == "firing"
        ]


def drop_off_alerts(prom_port: int) -> list[dict]:
    """Pending or firing FunnelDropOffSpike alerts as Prometheus sees them."""
    return prometheus_query(prom_port, 'ALERTS{alertname="FunnelDropOffSpike"}')


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel, PromQL) with the variables set as a person would pick them."""
    from stream.ops.grafana import dashboards

    out = []
    for uid, board in dashboards().items():
        funnel = "sales" if uid == "funnel-sales" else "shop"
        values = {"funnel": funnel, "window": "1m", "breakdown": "channel"}
        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for name, value in values.items():
                    expr = expr.replace(f"${name}", value)
                out.append((uid, panel["title"], expr))
    return out


def test_checkout_drop_fires_drop_off_alert_through_alertmanager(stack, stack_env):
    env = unique_env(stack_env, **ALERT_ENV)
    settings = settings_for(env)
    stack_api = Stack(settings)
    asyncio.run(stack_api.create_topics())
    prom = settings.prometheus_port
    with Receiver(TEST_ENV["FUNNEL_ALERT_WEBHOOK"]) as receiver:
        stack_api.write_rules(settings)  # rules with this test's short windows
        stack_api.reload_prometheus()
        port = free_port()
        worker = WorkerProcess(env, port).start()
        stack_api.write_scrape_targets([port], name=f"alerts-{port}")
        demo = subprocess.Popen(
            [sys.executable, "-m", "stream", "demo", "--rate", "150", "--seed", "7", "--speed", "6"]
            + ["--duration", str(NORMAL_S + 240), "--drop", f"checkout=0.05@{NORMAL_S / 60}"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started = time.monotonic()
        try:
            # Normal phase: the rules have data, and no drop-off alert is even pending.
            checkout = 'funnel:conversion:ratio{funnel="shop",step="checkout",window="1m"}'
            wait_for(
                lambda: prometheus_query(prom, checkout), 60, "the conversion rule to have data"
            )
            while time.monotonic() - started < NORMAL_S - 5:
                assert drop_off_alerts(prom) == [], "drop-off alert during normal traffic"
                time.sleep(2)
            assert receiver.firing("FunnelDropOffSpike") == []

            # The drop: Alertmanager delivers the alert for shop / checkout.
            wait_for(
                lambda: receiver.firing("FunnelDropOffSpike"),
                200,
                "FunnelDropOffSpike to reach the webhook",
                interval=1.0,
            )
            fired = receiver.firing("FunnelDropOffSpike")
            assert {(a["labels"]["funnel"], a["labels"]["step"]) for a in fired} == {
                ("shop", "checkout")
            }
            alert = fired[0]
            assert alert["labels"]["severity"] == "critical"
            assert "checkout" in alert["annotations"]["summary"]
            assert "of its baseline" in alert["annotations"]["description"]

            # Every dashboard query is valid PromQL and returns data from this Prometheus.
            empty = [
                (uid, title, expr)
                for uid, title, expr in dashboard_queries()
                if not prometheus_query(prom, expr)
            ]
            assert empty == [], f"dashboard queries without data: {empty}"
        finally:
            demo.kill()
            demo.wait(10)
            stack_api.targets_dir().joinpath(f"alerts-{port}.json").unlink(missing_ok=True)
            worker.stop()
            stack_api.write_rules(settings_for(stack_env))  # back to the session's rules
            stack_api.reload_prometheus()
