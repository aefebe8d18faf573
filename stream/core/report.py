"""`funnel report`: a section-5 document as a terminal table (pure rendering).

The narrow neck (the step with the lowest step conversion) is marked, and in
red when the output is a terminal, because it is what a person looks for first.
"""

from __future__ import annotations

from typing import Any

RED = "\033[1;31m"
RESET = "\033[0m"
BAR_WIDTH = 24


def percent(x: float | None) -> str:
    """A ratio as the report and the chart print it: one decimal, '-' for none."""
    return "-" if x is None else f"{x * 100:.1f}%"


def _seconds(x: float | None) -> str:
    if x is None:
        return "-"
    if x < 120:
        return f"{x:.0f}s"
    if x < 7200:
        return f"{x / 60:.0f}m"
    if x < 172800:
        return f"{x / 3600:.1f}h"
    return f"{x / 86400:.1f}d"


def render(doc: dict[str, Any], color: bool = False) -> str:
    """The steps of one funnel: reached, step conversion, drop-off, overall, time, bar."""
    steps = doc["steps"]
    first = steps[0]["reached"] if steps else 0
    span = doc["window"] if doc["window"] != "custom" else f"{doc['from']} .. {doc['to']}"
    lines = [f"funnel {doc['funnel']} ({doc.get('mode', 'sequence')}), {span}, {doc['view']} view"]
    header = f"{'step':<16}{'reached':>10}{'step conv':>11}{'drop-off':>10}{'overall':>10}"
    header += f"{'avg time':>10}  "
    lines.append(header)
    for step in steps:
        overall = step["reached"] / first if first else None
        bar = "#" * (round(BAR_WIDTH * overall) if overall else 0)
        row = (
            f"{step['name'][:15]:<16}{step['reached']:>10}{percent(step['conversion']):>11}"
            f"{percent(step['drop_off']):>10}{percent(overall):>10}"
            f"{_seconds(step.get('avg_time_to_convert_s')):>10}  {bar}"
        )
        if step["name"] == doc.get("narrow_neck"):
            row += "  <- narrow neck"
            if color:
                row = RED + row + RESET
        lines.append(row)
    lines.append(f"overall conversion {percent(doc.get('overall_conversion'))}")
    if doc.get("mode") == "pipeline":
        lines.append(
            f"leads {doc.get('leads', 0)}, won {doc.get('won', 0)}, lost {doc.get('lost', 0)}; "
            f"closing rate {percent(doc.get('closing_rate'))}, "
            f"win rate {percent(doc.get('win_rate'))}"
        )
        reasons = doc.get("lost_reasons") or {}
        if reasons:
            lines.append("lost reasons: " + ", ".join(f"{r} {n}" for r, n in reasons.items()))
    if not first:
        lines.append("no events in this window yet")
    return "\n".join(lines)
