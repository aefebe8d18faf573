"""Call tracking: which visit, source, campaign and keyword a phone call came from.

Pure logic (no Redis here; stream/worker/tracking_store.py is the adapter): the
tracking configuration, and how a call or deal is filled in from what the
store knows. Attribution is resolved when an event is normalised and carried
in the event written to the internal topic, so a replay of that topic gives
the same answer without the store.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from stream.core.funnels import parse_duration

DEFAULT_TRACKING = "tracking.toml"
# What a lease records and a call or deal inherits from it.
TOUCH_FIELDS = ("channel", "source", "medium", "campaign", "keyword")
LINK_FIELDS = ("visitor_id", "session_id")
_NUMBER = re.compile(r"^\+?[0-9]{3,20}$")


class TrackingConfigError(ValueError):
    """A tracking file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Tracking:
    lease: int = 1200  # seconds a dynamic number stays with a session
    pool: tuple[str, ...] = ()
    # number -> the attribution a call to it gets (channel, source, ...)
    static: dict[str, dict[str, str]] = field(default_factory=dict)
    default_static: str | None = None

    def static_for(self, source: str | None) -> str | None:
        """The static number of a source, else the default one."""
        for number, touch in self.static.items():
            if source is not None and touch.get("source") == source:
                return number
        return self.default_static


def parse_tracking(text: str, where: str = "<tracking>") -> Tracking:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TrackingConfigError(f"{where}: not valid TOML: {exc}") from None
    raw = doc.get("tracking", {})
    if not isinstance(raw, dict):
        raise TrackingConfigError(f"{where}: [tracking] must be a table")
    unknown = set(raw) - {"lease", "pool", "static"}
    if unknown:
        raise TrackingConfigError(f"{where}: [tracking]: unknown field(s) {sorted(unknown)}")
    try:
        lease = parse_duration(raw.get("lease", "20m"))
    except ValueError as exc:
        raise TrackingConfigError(f"{where}: [tracking] field `lease`: {exc}") from None
    entries = raw.get("pool", [])
    if not isinstance(entries, list):
        raise TrackingConfigError(f"{where}: [tracking] field `pool`: must be a list of numbers")
    pool: list[str] = []
    for i, entry in enumerate(entries, 1):
        try:
            pool += _numbers(entry)
        except ValueError as exc:
            raise TrackingConfigError(f"{where}: [tracking] pool entry {i}: {exc}") from None
    if len(set(pool)) != len(pool):
        raise TrackingConfigError(f"{where}: [tracking] field `pool`: a number is listed twice")
    static: dict[str, dict[str, str]] = {}
    default = None
    for i, entry in enumerate(raw.get("static", []), 1):
        at = f"{where}: [[tracking.static]] {i}"
        if not isinstance(entry, dict):
            raise TrackingConfigError(f"{at}: must be a table")
        number = entry.get("number")
        if not isinstance(number, str) or not _NUMBER.match(number):
            raise TrackingConfigError(f"{at}: field `number`: {number!r} is not a phone number")
        if number in static or number in pool:
            raise TrackingConfigError(f"{at}: number {number} is listed twice")
        unknown = set(entry) - {"number", "default", *TOUCH_FIELDS}
        if unknown:
            raise TrackingConfigError(f"{at}: unknown field(s) {sorted(unknown)}")
        touch = {k: entry[k] for k in TOUCH_FIELDS if k in entry}
        if not touch or not all(isinstance(v, str) and v for v in touch.values()):
            raise TrackingConfigError(f"{at}: needs a channel or source (non-empty strings)")
        static[number] = touch
        if entry.get("default"):
            if default is not None:
                raise TrackingConfigError(f"{at}: only one static number can be the default")
            default = number
    return Tracking(lease=lease, pool=tuple(pool), static=static, default_static=default)


def _numbers(entry: object) -> list[str]:
    """A number, or a range "+15555551000..+15555551999" of numbers."""
    if not isinstance(entry, str):
        raise ValueError(f"{entry!r} is not a phone number like +15555550100")
    first, _, last = entry.partition("..")
    for number in (first, last) if last else (first,):
        if not _NUMBER.match(number):
            raise ValueError(f"{number!r} is not a phone number like +15555550100")
    if not last:
        return [first]
    if len(first) != len(last) or int(last.lstrip("+")) < int(first.lstrip("+")):
        raise ValueError(f"{entry!r}: a range needs two numbers of one length, low to high")
    plus = "+" if first.startswith("+") else ""
    low, high = int(first.lstrip("+")), int(last.lstrip("+"))
    if high - low >= 100_000:
        raise ValueError(f"{entry!r}: more than 100000 numbers")
    width = len(first.lstrip("+"))
    return [f"{plus}{n:0{width}d}" for n in range(low, high + 1)]


def load_tracking(path: str | Path | None = None) -> Tracking:
    if path:
        path = Path(path)
        try:
            return parse_tracking(path.read_text(), str(path))
        except OSError as exc:
            raise TrackingConfigError(f"{path}: cannot read tracking file: {exc}") from None
    text = resources.files("stream.core").joinpath(DEFAULT_TRACKING).read_text()
    return parse_tracking(text, f"stream/{DEFAULT_TRACKING}")


def lease_request(body: Any) -> dict[str, str]:
    """The JSON body of POST /api/tracking-numbers, checked; errors name the field."""
    if not isinstance(body, dict):
        raise ValueError("body: must be a JSON object")
    out = {}
    for name in ("visitor_id", *TOUCH_FIELDS, "session_id"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not 1 <= len(value) <= 128:
            raise ValueError(f"field `{name}`: must be a string of 1 to 128 characters")
        out[name] = value
    if "visitor_id" not in out:
        raise ValueError("field `visitor_id`: required")
    return out


def fill(event_doc: dict[str, Any], touch: dict[str, Any] | None) -> list[str]:
    """Fill the event's missing attribution and links from ``touch``; returns what was
    filled. Fields the event carries itself always win."""
    filled = []
    for name in (*TOUCH_FIELDS, *LINK_FIELDS):
        value = (touch or {}).get(name)
        if value and event_doc.get(name) is None:
            event_doc[name] = value
            filled.append(name)
    return filled


def filled(raw: bytes, touch: dict[str, Any]) -> bytes:
    """An event's bytes with its missing attribution and links filled from ``touch``
    (``fill``): a deal from its call's or visitor's touch, at once or, corrected,
    once its call came."""
    doc = orjson.loads(raw)
    fill(doc, touch)
    return orjson.dumps(doc)
