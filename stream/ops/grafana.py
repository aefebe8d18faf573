"""Grafana dashboards and alert rules, generated (pure; `funnel grafana DIR` writes them).

deploy/grafana/dashboards/*.json and deploy/grafana/provisioning/alerting/
funnel.yml are this module's output (a test keeps them equal). Panels query
the recording rules of stream/ops/rules.py, so a ratio shown is always a ratio of
sums over workers; the Grafana alert rules are the Prometheus alerts of the
same module, for users who alert in Grafana.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from stream.config import Settings
from stream.ops.rules import Dumper, alert_rules

DS = {"type": "prometheus", "uid": "prometheus"}
SEL = 'funnel="$funnel", window="$window"'


def _var(name: str, query: str, label: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "sort": 1,
    }


def _panel(
    kind: str,
    title: str,
    expr: str,
    legend: str = "",
    unit: str = "short",
    w: int = 12,
    h: int = 8,
    description: str = "",
) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": "A", "expr": expr, "legendFormat": legend, "instant": kind != "timeseries"}
        ],
    }
    if kind == "bargauge":
        panel["options"] = {"orientation": "horizontal", "displayMode": "gradient"}
    return panel


def _layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    x = y = row_h = 0
    for i, panel in enumerate(panels, 1):
        pos = panel["gridPos"]
        if x + pos["w"] > 24:
            x, y, row_h = 0, y + row_h, 0
        pos.update(x=x, y=y)
        x += pos["w"]
        row_h = max(row_h, pos["h"])
        panel["id"] = i
    return panels


def _board(uid: str, title: str, variables: list, panels: list) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["funnel-stream"],
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "10s",
        "templating": {"list": variables},
        "panels": _layout(panels),
    }


FUNNEL_VAR = _var("funnel", "label_values(funnel:step_reached:sum, funnel)", "Funnel")
WINDOW_VAR = _var("window", "label_values(funnel:step_reached:sum, window)", "Window")


def _overview_board() -> dict[str, Any]:
    return _board(
        "funnel-overview",
        "Funnel stream - funnel overview",
        [FUNNEL_VAR, WINDOW_VAR],
        [
            _panel(
                "bargauge",
                "Attempts reaching each step",
                f"sum by (position, step) (funnel:step_reached:sum{{{SEL}}})",
                "{{step}}",
                description="Attempts (entities per attempt) that reached the step in the window.",
            ),
            _panel(
                "bargauge",
                "Step conversion (from the step before)",
                f"funnel:conversion:ratio{{{SEL}}}",
                "{{step}}",
                "percentunit",
            ),
            _panel(
                "stat",
                "Overall conversion",
                f"funnel:overall_conversion:ratio{{{SEL}}}",
                "",
                "percentunit",
                w=8,
                h=5,
            ),
            _panel(
                "stat",
                "Narrow neck (lowest step conversion)",
                f'bottomk(1, funnel:conversion:ratio{{{SEL}, position!="first"}})',
                "{{step}}",
                "percentunit",
                w=8,
                h=5,
            ),
            _panel(
                "stat",
                "Entering the funnel",
                f'sum(funnel:step_reached:sum{{{SEL}, position="first"}})',
                w=8,
                h=5,
            ),
            _panel(
                "timeseries",
                "Conversion per step over time",
                f'funnel:conversion:ratio{{{SEL}, position!="first"}}',
                "{{step}}",
                "percentunit",
                w=24,
            ),
            _panel(
                "bargauge",
                "Median time to convert from the step before",
                "histogram_quantile(0.5, sum by (step, le) "
                '(funnel_time_to_convert_seconds_bucket{funnel="$funnel"}))',
                "{{step}}",
                "s",
                w=24,
                description="Upper bound of the histogram bin holding the median.",
            ),
        ],
    )


def _channels_board() -> dict[str, Any]:
    return _board(
        "funnel-channels",
        "Funnel stream - per channel",
        [
            FUNNEL_VAR,
            WINDOW_VAR,
            _var(
                "breakdown",
                'label_values(funnel:step_reached_by:sum{funnel="$funnel"}, breakdown)',
                "Breakdown",
            ),
        ],
        [
            _panel(
                "bargauge",
                "Overall conversion by $breakdown",
                f'funnel:overall_conversion_by:ratio{{{SEL}, breakdown="$breakdown"}}',
                "{{value}}",
                "percentunit",
            ),
            _panel(
                "bargauge",
                "Entering the funnel by $breakdown",
                f'sum by (value) (funnel:step_reached_by:sum{{{SEL}, breakdown="$breakdown", '
                'position="first"})',
                "{{value}}",
            ),
            _panel(
                "timeseries",
                "Step conversion by $breakdown",
                f'funnel:conversion_by:ratio{{{SEL}, breakdown="$breakdown", position!="first"}}',
                "{{value}} {{step}}",
                "percentunit",
                w=24,
            ),
        ],
    )


def _sales_board() -> dict[str, Any]:
    return _board(
        "funnel-sales",
        "Funnel stream - sales pipeline",
        [_var("funnel", "label_values(funnel_step_lost, funnel)", "Pipeline"), WINDOW_VAR],
        [
            _panel(
                "stat",
                "Closing rate (won / leads)",
                f"funnel:closing_rate:ratio{{{SEL}}}",
                "",
                "percentunit",
                w=6,
                h=5,
            ),
            _panel(
                "stat",
                "Win rate (won / closed)",
                f"funnel:win_rate:ratio{{{SEL}}}",
                "",
                "percentunit",
                w=6,
                h=5,
            ),
            _panel(
                "stat",
                "Leads",
                f'sum(funnel:step_reached:sum{{{SEL}, position="first"}})',
                w=4,
                h=5,
            ),
            _panel(
                "stat", "Won", f'sum(funnel:step_reached:sum{{{SEL}, position="last"}})', w=4, h=5
            ),
            _panel("stat", "Lost", f'sum(funnel_step_lost{{{SEL}, breakdown=""}})', w=4, h=5),
            _panel(
                "bargauge",
                "Deals reaching each stage",
                f"sum by (position, step) (funnel:step_reached:sum{{{SEL}}})",
                "{{step}}",
            ),
            _panel(
                "piechart",
                "Lost reasons",
                f"sum by (reason) (funnel_lost_reason{{{SEL}}})",
                "{{reason}}",
            ),
            _panel(
                "bargauge",
                "Closing rate per manager",
                f'funnel:closing_rate_by:ratio{{{SEL}, breakdown="manager"}}',
                "{{value}}",
                "percentunit",
            ),
            _panel(
                "bargauge",
                "Win rate per manager",
                f'funnel:win_rate_by:ratio{{{SEL}, breakdown="manager"}}',
                "{{value}}",
                "percentunit",
            ),
            _panel(
                "bargauge",
                "Lost per stage",
                f'sum by (step) (funnel_step_lost{{{SEL}, breakdown=""}})',
                "{{step}}",
                w=24,
            ),
        ],
    )


def _ops_board() -> dict[str, Any]:
    return _board(
        "funnel-ops",
        "Funnel stream - ops",
        [],
        [
            _panel(
                "timeseries",
                "Events per second by topic",
                "sum by (topic) (funnel:events:rate1m)",
                "{{topic}}",
                "ops",
            ),
            _panel(
                "timeseries",
                "Rejected per second by topic and reason",
                "sum by (topic, reason) (rate(funnel_events_rejected_total[5m])) or vector(0)",
                "{{topic}} {{reason}}",
                "ops",
            ),
            _panel(
                "timeseries",
                "Consumer lag (messages)",
                "sum by (topic) (funnel_consumer_lag_messages)",
                "{{topic}}",
            ),
            _panel(
                "timeseries",
                "Event-time lag (now - newest event processed)",
                "max by (topic) (funnel_event_lag_seconds)",
                "{{topic}}",
                "s",
            ),
            _panel(
                "timeseries",
                "Late events per second by funnel",
                "sum by (funnel) (rate(funnel_events_late_total[5m])) or vector(0)",
                "{{funnel}}",
                "ops",
            ),
            _panel(
                "timeseries",
                "Duplicates dropped per second",
                "sum by (topic) (rate(funnel_events_duplicate_total[5m])) or vector(0)",
                "{{topic}}",
                "ops",
            ),
            _panel("stat", "Workers up", 'sum(up{job="funnel"})', w=8, h=5),
            _panel(
                "stat",
                "Commit latency (median, slowest worker)",
                "max(funnel_commit_latency_seconds)",
                unit="s",
                w=8,
                h=5,
            ),
            _panel(
                "stat",
                "Rebalances in the last hour",
                "sum(increase(funnel_rebalances_total[1h]))",
                w=8,
                h=5,
            ),
        ],
    )


def _money_board() -> dict[str, Any]:
    return _board(
        "funnel-money",
        "Funnel stream - revenue, spend and ROMI",
        [FUNNEL_VAR, WINDOW_VAR],
        [
            _panel(
                "bargauge",
                "ROMI by channel",
                f'funnel:romi:ratio{{{SEL}, breakdown="channel"}}',
                "{{value}} ({{currency}})",
                "percentunit",
                description="(revenue - ad spend) / ad spend; revenue by first touch, spend "
                "from ads.spend spread evenly over its day.",
            ),
            _panel(
                "bargauge",
                "ROMI by campaign",
                f'funnel:romi:ratio{{{SEL}, breakdown="campaign"}}',
                "{{value}} ({{currency}})",
                "percentunit",
            ),
            _panel(
                "bargauge",
                "Revenue by channel",
                f'funnel:revenue:sum{{{SEL}, breakdown="channel"}}',
                "{{value}} ({{currency}})",
            ),
            _panel(
                "bargauge",
                "Ad spend by channel",
                'funnel:ad_spend:sum{window="$window", breakdown="channel"}',
                "{{value}} ({{currency}})",
            ),
            _panel(
                "stat",
                "Lead response (lead to first answered call, mean)",
                "funnel:lead_response_seconds:avg",
                "{{funnel}}",
                "s",
                w=8,
                h=5,
            ),
            _panel(
                "bargauge",
                "Calls per manager (answered, missed inbound)",
                'sum by (value, kind) (funnel_calls{window="$window", breakdown="manager", '
                'kind=~"answered|missed"})',
                "{{value}} {{kind}}",
                w=8,
                h=5,
            ),
            _panel(
                "bargauge",
                "Open pipeline amount by stage",
                "sum by (stage, currency) (funnel_open_amount)",
                "{{stage}} ({{currency}})",
                w=8,
                h=5,
                description="Weight by stage probability for the forecast (the API's "
                "forecast=1 does this).",
            ),
        ],
    )


def dashboards() -> dict[str, dict[str, Any]]:
    boards = (_overview_board(), _channels_board(), _sales_board(), _money_board(), _ops_board())
    return {b["uid"]: b for b in boards}


def alerting(settings: Settings) -> dict[str, Any]:
    """Grafana alert rule provisioning equal to the Prometheus alerts."""
    rules = []
    for rule in alert_rules(settings)[0]["rules"]:
        rules.append(
            {
                "uid": "funnel-" + rule["alert"].lower(),
                "title": rule["alert"],
                "condition": "B",
                "data": [
                    {
                        "refId": "A",
                        "datasourceUid": DS["uid"],
                        "relativeTimeRange": {"from": 600, "to": 0},
                        "model": {"refId": "A", "expr": rule["expr"], "instant": True},
                    },
                    {
                        # The Prometheus expression only returns series that breach; any is a hit.
                        "refId": "B",
                        "datasourceUid": "__expr__",
                        "model": {
                            "refId": "B",
                            "type": "threshold",
                            "expression": "A",
                            "conditions": [{"evaluator": {"type": "gt", "params": [-1e300]}}],
                        },
                    },
                ],
                "for": rule["for"],
                "noDataState": "OK",
                "execErrState": "Error",
                "labels": rule["labels"],
                "annotations": _grafana_text(rule["annotations"]),
            }
        )
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": "funnel-alerts",
                "folder": "Funnel stream",
                "interval": "1m",
                "rules": rules,
            }
        ],
    }


def _grafana_text(annotations: dict[str, str]) -> dict[str, str]:
    """Prometheus alert templates in Grafana's dialect: $value is $values.A.Value there,
    and Grafana has no `query` function (that part of a summary is left out)."""
    out = {}
    for key, text in annotations.items():
        if "| query" in text:
            head, _, rest = text.partition("{{ with")
            text = head.removesuffix("to ") + "below its baseline" + rest.partition("{{ end }}")[2]
        out[key] = text.replace("$value ", "$values.A.Value ")
    return out


def write_all(root: Path, settings: Settings) -> list[Path]:
    """Write the dashboards and the alert provisioning under ``root`` (deploy/grafana)."""
    written = []
    for uid, board in dashboards().items():
        path = root / "dashboards" / f"{uid.removeprefix('funnel-')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(board, indent=2) + "\n")
        written.append(path)
    path = root / "provisioning" / "alerting" / "funnel.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_alerting(settings))
    written.append(path)
    return written


def render_alerting(settings: Settings) -> str:
    header = "# Generated by `funnel grafana` from stream/ops/grafana.py (the Prometheus alerts).\n"
    return header + yaml.dump(alerting(settings), Dumper=Dumper, sort_keys=False, width=100)
