"""Prometheus recording and alert rules, generated from the settings (pure).

One source for the rules: `funnel rules` prints them, `funnel stack up` writes
them with the current FUNNEL_ALERT_* settings for the local Prometheus, and
deploy/prometheus/rules/funnel.yml is this output with the defaults (a test
keeps it equal). Ratios are always ratios of sums over workers, never averages
of per-worker ratios.
"""

from __future__ import annotations

from typing import Any

import yaml

from stream.config import Settings

# Step series over all workers; `previous` and `position` come from the worker.
STEP_SUM = "funnel:step_reached:sum"
STEP_SUM_BY = "funnel:step_reached_by:sum"
KEYS = "funnel, step, previous, position, window"
KEYS_BY = KEYS + ", breakdown, value"
SPEND_KEYS = "window, currency, breakdown, value"
MONEY_KEYS = "funnel, " + SPEND_KEYS


def _conversion(source: str, extra: str = "") -> str:
    """Each step over the step before it: relabel the denominator's step as `previous`."""
    on = f"funnel, previous, window{extra}"
    return (
        f"{source}\n"
        f"  / on ({on}) group_left()\n"
        f"(sum by ({on}) (\n"
        f'  label_replace({source}, "previous", "$1", "step", "(.+)")\n'
        f") > 0)"
    )


def _overall(source: str, extra: str = "") -> str:
    on = f"funnel, window{extra}"
    return (
        f'sum by ({on}) ({source}{{position="last"}})\n'
        f'  / on ({on})\n(sum by ({on}) ({source}{{position="first"}}) > 0)'
    )


def recording_rules() -> list[dict[str, Any]]:
    return [_throughput_rules(), _conversion_rules(), _money_rules()]


def _throughput_rules() -> dict[str, Any]:
    return {
        "name": "funnel-throughput",
        "rules": [
            {
                "record": "funnel:events:rate1m",
                "expr": "sum by (topic, type) (rate(funnel_events_total[1m]))",
            },
            {
                "record": "funnel:rejected:rate1m",
                "expr": "sum by (topic, reason) (rate(funnel_events_rejected_total[1m]))",
            },
        ],
    }


def _conversion_rules() -> dict[str, Any]:
    lost_pipelines = "sum by (funnel, window) (funnel_step_lost)"
    won = f'sum by (funnel, window) ({STEP_SUM}{{position="last"}})'
    lost = 'sum by (funnel, window) (funnel_step_lost{breakdown=""})'
    won_by = f'sum by (funnel, window, breakdown, value) ({STEP_SUM_BY}{{position="last"}})'
    lost_by = 'sum by (funnel, window, breakdown, value) (funnel_step_lost{breakdown!=""})'
    by = "funnel, window, breakdown, value"
    return {
        "name": "funnel-conversion",
        "rules": [
            {
                "record": STEP_SUM,
                "expr": f'sum by ({KEYS}) (funnel_step_reached{{breakdown=""}})',
            },
            {
                "record": STEP_SUM_BY,
                "expr": f'sum by ({KEYS_BY}) (funnel_step_reached{{breakdown!=""}})',
            },
            {"record": "funnel:conversion:ratio", "expr": _conversion(STEP_SUM)},
            {
                "record": "funnel:conversion_by:ratio",
                "expr": _conversion(STEP_SUM_BY, ", breakdown, value"),
            },
            {"record": "funnel:overall_conversion:ratio", "expr": _overall(STEP_SUM)},
            {
                "record": "funnel:overall_conversion_by:ratio",
                "expr": _overall(STEP_SUM_BY, ", breakdown, value"),
            },
            {
                "record": "funnel:closing_rate:ratio",
                "expr": f"funnel:overall_conversion:ratio\n  and on (funnel, window) {lost_pipelines}",
            },
            {
                "record": "funnel:closing_rate_by:ratio",
                "expr": f"funnel:overall_conversion_by:ratio\n  and on (funnel, window) {lost_pipelines}",
            },
            {
                "record": "funnel:win_rate:ratio",
                "expr": f"{won}\n  / on (funnel, window)\n(({won} + on (funnel, window) {lost}) > 0)",
            },
            {
                "record": "funnel:win_rate_by:ratio",
                "expr": f"{won_by}\n  / on ({by})\n(({won_by} + on ({by}) {lost_by}) > 0)",
            },
        ],
    }


def _money_rules() -> dict[str, Any]:
    return {
        "name": "funnel-money",
        "rules": [
            {
                "record": "funnel:revenue:sum",
                "expr": f"sum by ({MONEY_KEYS}) (funnel_revenue)",
            },
            {
                "record": "funnel:ad_spend:sum",
                "expr": f"sum by ({SPEND_KEYS}) (funnel_ad_spend)",
            },
            {
                # (revenue - spend) / spend per funnel, for the total and per
                # channel and campaign: the dimensions ad spend is reported by.
                "record": "funnel:romi:ratio",
                "expr": (
                    '(funnel:revenue:sum{breakdown=~"|channel|campaign"}\n'
                    f"  - on ({SPEND_KEYS}) group_left() funnel:ad_spend:sum)\n"
                    f"  / on ({SPEND_KEYS}) group_left() (funnel:ad_spend:sum > 0)"
                ),
            },
            {
                "record": "funnel:lead_response_seconds:avg",
                "expr": (
                    "sum by (funnel) (funnel_lead_response_seconds_sum)\n"
                    "  / (sum by (funnel) (funnel_lead_response_seconds_count) > 0)"
                ),
            },
        ],
    }


def alert_rules(s: Settings) -> list[dict[str, Any]]:
    alerts = [
        _funnel_drop_off_spike(s),
        _funnel_no_events(s),
        _funnel_consumer_lag_high(s),
        _funnel_rejected_events_high(s),
        _funnel_worker_down(s),
        _funnel_tracking_pool_exhausted(s),
    ]
    return [{"name": "funnel-alerts", "rules": alerts}]


def _funnel_drop_off_spike(s: Settings) -> dict[str, Any]:
    short, long_, offset = s.alert_short_window, s.alert_long_window, s.alert_baseline_offset
    keep = 1 - s.alert_drop
    baseline = (
        f'(funnel:conversion:ratio{{window="{short}"}} offset {offset})\n'
        f'  or on (funnel, step) funnel:conversion:ratio{{window="{long_}"}}'
    )
    # Volume: the previous step's count in the short window (attempts that could convert),
    # put on each step's series by the same relabelling as the conversion ratio.
    prev_volume = (
        f"sum by (funnel, step) (\n"
        f'  0 * {STEP_SUM}{{window="{short}"}}\n'
        f"    + on (funnel, previous, window) group_left()\n"
        f"  sum by (funnel, previous, window) (\n"
        f'    label_replace({STEP_SUM}{{window="{short}"}}, "previous", "$1", "step", "(.+)")\n'
        f"  )\n"
        f")"
    )
    drop_expr = (
        f'funnel:conversion:ratio{{window="{short}", position!="first"}}\n'
        f"  / on (funnel, step)\n({baseline})\n"
        f"< {keep:g}\n"
        f"and on (funnel, step)\n{prev_volume} >= {s.alert_min_volume}"
    )
    current = (
        "{{ with printf \"funnel:conversion:ratio{funnel='%s',step='%s',window='" + short + "'}\" "
        "$labels.funnel $labels.step | query }}{{ . | first | value | humanizePercentage }}{{ end }}"
    )
    return {
        "alert": "FunnelDropOffSpike",
        "expr": drop_expr,
        "for": s.alert_for,
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": (
                "Funnel {{ $labels.funnel }}: conversion to step {{ $labels.step }} "
                f"fell to {current} over {short}"
            ),
            "description": (
                "Conversion into step {{ $labels.step }} of funnel {{ $labels.funnel }} "
                f"over the last {short} is {{{{ $value | humanizePercentage }}}} of its "
                f"baseline (the same {short} {offset} ago, or the last {long_}); "
                f"alerting below {keep:.0%} with at least {s.alert_min_volume} attempts "
                "at the step before. Something in this step may be broken (a form, "
                "a payment provider, a page)."
            ),
        },
    }


def _funnel_no_events(s: Settings) -> dict[str, Any]:
    return {
        "alert": "FunnelNoEvents",
        "expr": 'sum(rate(funnel_events_total[10m])) == 0 and sum(up{job="funnel"}) > 0',
        "for": "10m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "No funnel events for 10 minutes",
            "description": (
                "The funnel workers are up but have counted no event on any input "
                "topic for 10 minutes; check the producers and topic names."
            ),
        },
    }


def _funnel_consumer_lag_high(s: Settings) -> dict[str, Any]:
    return {
        "alert": "FunnelConsumerLagHigh",
        "expr": (f"sum by (topic) (funnel_consumer_lag_messages) > {s.alert_lag_messages}"),
        "for": "5m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "Funnel workers are {{ $value }} messages behind on {{ $labels.topic }}",
            "description": (
                "{{ $value }} messages of topic {{ $labels.topic }} are not processed "
                f"(more than {s.alert_lag_messages} for 5 minutes): the funnel numbers "
                "are behind real time. Add workers (and partitions) or look for a "
                "slow or crashing worker."
            ),
        },
    }


def _funnel_rejected_events_high(s: Settings) -> dict[str, Any]:
    return {
        "alert": "FunnelRejectedEventsHigh",
        "expr": (
            "sum by (topic) (rate(funnel_events_rejected_total[10m]))\n"
            "  / on (topic)\n"
            "(sum by (topic) (rate(funnel_events_rejected_total[10m]))\n"
            "  + on (topic)\n"
            "  (sum by (topic) (rate(funnel_events_total[10m])) or on (topic)\n"
            "   0 * sum by (topic) (rate(funnel_events_rejected_total[10m]))))\n"
            f"> {s.alert_reject_ratio:g}"
        ),
        "for": "10m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "{{ $value | humanizePercentage }} of events on {{ $labels.topic }} are rejected",
            "description": (
                "Over 10 minutes {{ $value | humanizePercentage }} of the messages on "
                "{{ $labels.topic }} went to the dead-letter topic (more than "
                f"{s.alert_reject_ratio:.0%}). A producer may send a changed schema; the "
                "dead-letter headers name the reason and the field."
            ),
        },
    }


def _funnel_worker_down(s: Settings) -> dict[str, Any]:
    return {
        "alert": "FunnelWorkerDown",
        "expr": 'up{job="funnel"} == 0',
        "for": "1m",
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": "Funnel worker {{ $labels.instance }} is down",
            "description": (
                "Prometheus could not scrape the funnel worker at "
                "{{ $labels.instance }} for 1 minute; its partitions are not being "
                "counted until it returns or a rebalance moves them."
            ),
        },
    }


def _funnel_tracking_pool_exhausted(s: Settings) -> dict[str, Any]:
    return {
        "alert": "FunnelTrackingPoolExhausted",
        "expr": "sum by (source) (increase(funnel_tracking_pool_exhausted_total[5m])) > 0",
        "for": "5m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "Call tracking pool exhausted for {{ $labels.source }} visitors",
            "description": (
                "For 5 minutes visitors from {{ $labels.source }} got the static number "
                "because every pool number was leased: their calls cannot be attributed to "
                "their sessions. Add numbers to the pool (FUNNEL_TRACKING), or look for a "
                "client leasing in bulk (funnel_tracking_requests_limited_total)."
            ),
        },
    }


class Dumper(yaml.SafeDumper):
    """YAML with multi-line strings (PromQL) as literal blocks."""

    pass


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


Dumper.add_representer(str, _str)


def render_rules(settings: Settings, kubernetes: bool = False) -> str:
    """The rule file for Prometheus, or with ``kubernetes`` the same groups as a
    Prometheus Operator PrometheusRule (deploy/k8s/base/prometheusrule.yaml)."""
    groups = recording_rules() + alert_rules(settings)
    if kubernetes:
        doc: dict[str, Any] = {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": "funnel-stream"},
            "spec": {"groups": groups},
        }
        command = "funnel rules --kubernetes"
    else:
        doc = {"groups": groups}
        command = "funnel rules"
    header = (
        f"# Generated by `{command}` from stream/ops/rules.py with the default settings;\n"
        "# edit stream/ops/rules.py and regenerate (a test keeps this file equal).\n"
    )
    return header + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=100)
