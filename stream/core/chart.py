"""A funnel document as an SVG picture (pure rendering) for reports and the page's download.

The same section-5 document the API, `funnel replay` and `funnel report` use;
bars narrow with the share of step 1 that reached each step. The narrow neck
is drawn amber and a step flagged as a sudden drop (``flagged``) red, as on the
live page, so a pasted chart says the same thing as the page.
"""

from __future__ import annotations

from html import escape
from typing import Any

from stream.core.report import percent

WIDTH = 720
ROW = 56
TOP = 64
LABEL_W = 150
BAR_W = 380
BLUE, AMBER, RED, GREY = "#3b82f6", "#f59e0b", "#dc2626", "#6b7280"


def _span(doc: dict[str, Any]) -> str:
    if doc.get("window") == "custom":
        return f"{doc.get('from') or '…'} to {doc.get('to') or '…'}"
    return f"last {doc['window']}" if doc.get("window") != "all" else "all retained data"


def funnel_svg(doc: dict[str, Any], title: str | None = None) -> str:
    """One funnel's steps as narrowing bars with counts, step conversion and drop-off."""
    steps = doc["steps"]
    first = steps[0]["reached"] if steps else 0
    height = TOP + ROW * len(steps) + 56
    heading = title or f"Funnel {doc['funnel']} — {_span(doc)}, {doc.get('view', 'period')} view"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="system-ui, sans-serif" font-size="14">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="16" y="32" font-size="18" font-weight="600">{escape(heading)}</text>',
    ]
    for i, step in enumerate(steps):
        y = TOP + i * ROW
        share = step["reached"] / first if first else 0.0
        width = max(2.0, BAR_W * share)
        x = LABEL_W + (BAR_W - width) / 2
        color = BLUE
        note = ""
        if step.get("flagged"):
            color, note = (
                RED,
                f" ▼ sudden drop (baseline {percent(step.get('baseline_conversion'))})",
            )
        elif step["name"] == doc.get("narrow_neck"):
            color, note = AMBER, " narrow neck"
        out.append(
            f'<text x="16" y="{y + 26}" font-weight="600">{escape(step["name"])}</text>'
            f'<rect x="{x:.1f}" y="{y + 6}" width="{width:.1f}" height="{ROW - 16}" rx="4" '
            f'fill="{color}"><title>{escape(step["name"])}: {step["reached"]}</title></rect>'
            f'<text x="{LABEL_W + BAR_W / 2}" y="{y + 31}" text-anchor="middle" '
            f'fill="#ffffff" font-weight="600">{step["reached"]:,}</text>'
        )
        detail = (
            "entered"
            if i == 0
            else f"{percent(step['conversion'])} of previous, drop-off {percent(step['drop_off'])}"
        )
        out.append(
            f'<text x="{LABEL_W + BAR_W + 12}" y="{y + 22}" font-size="12">{escape(detail)}</text>'
            f'<text x="{LABEL_W + BAR_W + 12}" y="{y + 38}" font-size="12" fill="{color}">'
            f"{escape(note.strip())}</text>"
        )
    footer = f"overall conversion {percent(doc.get('overall_conversion'))}"
    if doc.get("mode") == "pipeline":
        footer += (
            f" · closing rate {percent(doc.get('closing_rate'))}"
            f" · win rate {percent(doc.get('win_rate'))}"
        )
    if not first:
        footer = "no events in this window yet"
    out.append(
        f'<text x="16" y="{height - 20}" fill="{GREY}">{escape(footer)}</text>',
    )
    out.append("</svg>")
    return "\n".join(out)
