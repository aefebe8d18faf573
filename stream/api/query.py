"""Query parameters of the JSON API (pure parsing; errors name the parameter)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from stream.core.events import Rejection, parse_timestamp
from stream.core.funnels import Funnel

WINDOWS = {"5m": 300, "1h": 3600, "24h": 86400, "all": None}
MAX_PARAM = 64
MAX_TREND_POINTS = 96
MAX_CARTS = 1000


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


def parse_view(params: dict[str, str]) -> str:
    """``view``: period (default) or cohort."""
    view = params.get("view", "period")
    if view not in ("period", "cohort"):
        raise BadQuery("view", f"view={view!r}; use period or cohort")
    return view


def parse_query(params: dict[str, str], funnel: Funnel, now: float) -> Query:
    for key, value in params.items():
        if len(value) > MAX_PARAM:
            raise BadQuery(key, f"parameter `{key}` is longer than {MAX_PARAM} characters")
    view = parse_view(params)
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


def baseline_range(query: Query, long_window_s: float) -> tuple[float, float]:
    """The period a window's step conversions are compared with: the long window before it.

    A trailing 5m window is compared with the 24 h (FUNNEL_ALERT_LONG_WINDOW)
    that end where it starts, so a drop inside the window does not lower its
    own baseline. ``all`` and custom ranges compare with the long window before
    their start (for ``all``: nothing, so no step is flagged).
    """
    return query.start - long_window_s, query.start


def trend_ranges(params: dict[str, str], now: float, bucket: float) -> list[tuple[float, float]]:
    """``hours`` (default 6) split into ``points`` (default 24) ranges on bucket boundaries."""
    hours = parse_hours(params, "6")
    try:
        points = int(params.get("points", "24")[:MAX_PARAM])
    except ValueError:
        raise BadQuery("points", f"points={params.get('points')!r}; use a whole number") from None
    if not 1 <= points <= MAX_TREND_POINTS:
        raise BadQuery("points", f"points={points}; use 1 to {MAX_TREND_POINTS}")
    step = max(bucket, (hours * 3600 / points) // bucket * bucket)
    end = (now // bucket + 1) * bucket  # the bucket holding `now` counts as a whole
    return [(end - (points - i) * step, end - (points - i - 1) * step) for i in range(points)]


def iso(ts: float) -> str:
    """Event time as RFC 3339 UTC, the form the API takes in from/to."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_cart_query(params: dict[str, str]) -> tuple[float, int]:
    """``hours`` (default 24, up to 35 days) and ``limit`` (default 100) of the
    abandoned carts list."""
    hours = parse_hours(params, "24")
    try:
        limit = int(params.get("limit", "100")[:MAX_PARAM])
    except ValueError:
        raise BadQuery("limit", f"limit={params.get('limit')!r}; use a whole number") from None
    if not 1 <= limit <= MAX_CARTS:
        raise BadQuery("limit", f"limit={limit}; use 1 to {MAX_CARTS}")
    return hours, limit


def parse_hours(params: dict[str, str], default: str) -> float:
    """``hours``: more than 0, at most the 35 days counters are kept by default."""
    try:
        hours = float(params.get("hours", default)[:MAX_PARAM])
    except ValueError:
        raise BadQuery("hours", f"hours={params.get('hours')!r}; use a number of hours") from None
    if not 0 < hours <= 24 * 35:
        raise BadQuery("hours", f"hours={hours:g}; use more than 0 and at most {24 * 35}")
    return hours


def pick_funnel(params: dict[str, str], candidates: list[Funnel], what: str) -> Funnel:
    """The ``funnel`` parameter among ``candidates`` (default: the first)."""
    name = params.get("funnel", candidates[0].name if candidates else "")
    for funnel in candidates:
        if funnel.name == name:
            return funnel
    known = [f.name for f in candidates]
    raise BadQuery("funnel", f"funnel={name[:MAX_PARAM]!r}: use {what}: {known}")
