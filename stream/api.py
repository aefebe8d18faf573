"""Query parameters of the JSON API (pure parsing; errors name the parameter)."""

from __future__ import annotations

from dataclasses import dataclass

from stream.events import Rejection, parse_timestamp
from stream.funnels import Funnel

WINDOWS = {"5m": 300, "1h": 3600, "24h": 86400, "all": None}
MAX_PARAM = 64


class BadQuery(ValueError):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class Query:
    window: str
    start: float
    end: float
    start_text: str | None
    end_text: str | None
    view: str
    breakdown: str | None


def parse_query(params: dict[str, str], funnel: Funnel, now: float) -> Query:
    for key, value in params.items():
        if len(value) > MAX_PARAM:
            raise BadQuery(key, f"parameter `{key}` is longer than {MAX_PARAM} characters")
    view = params.get("view", "period")
    if view not in ("period", "cohort"):
        raise BadQuery("view", f"view={view!r}; use period or cohort")
    breakdown = params.get("breakdown") or None
    if breakdown is not None and breakdown not in funnel.breakdowns:
        raise BadQuery(
            "breakdown",
            f"breakdown={breakdown!r}; funnel {funnel.name!r} breaks down by "
            f"{list(funnel.breakdowns)}",
        )
    if "from" in params or "to" in params:
        try:
            start = parse_timestamp(params["from"], "from") if "from" in params else float("-inf")
            end = parse_timestamp(params["to"], "to") if "to" in params else float("inf")
        except Rejection as exc:
            raise BadQuery(exc.field or "from", exc.message) from None
        return Query("custom", start, end, params.get("from"), params.get("to"), view, breakdown)
    window = params.get("window", "1h")
    if window not in WINDOWS:
        raise BadQuery("window", f"window={window!r}; use one of {list(WINDOWS)} or from/to")
    span = WINDOWS[window]
    start = float("-inf") if span is None else now - span
    return Query(window, start, float("inf"), None, None, view, breakdown)
