"""Funnel definitions from TOML (DESIGN.md section 4), checked with precise errors.

A bad file is rejected with a message naming the file, the funnel, the step
and the field, so a marketer editing it can fix it without reading code.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from stream.core.events import ATTRIBUTION, EVENT_TYPES

DEFAULT_FUNNELS = "funnels.toml"
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
EVENT_FIELDS = {"type"} | {f for t in EVENT_TYPES.values() for f in t.__struct_fields__} - {"ts"}


class FunnelConfigError(ValueError):
    """A funnel file that cannot be used; the message says where and why."""


def parse_duration(text: str) -> int:
    """'90s', '5m', '1h', '7d', '2w' -> seconds."""
    m = _DURATION.match(str(text).strip())
    if not m or int(m[1]) <= 0:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 1h, 7d or 2w")
    return int(m[1]) * _UNITS[m[2]]


@dataclass(frozen=True)
class Step:
    name: str
    match: dict[str, frozenset[str]]

    def matches(self, event: Any) -> bool:
        for key, allowed in self.match.items():
            value = event.type if key == "type" else getattr(event, key, None)
            if value is None:
                return False
            if value.__class__ is not str:  # str() of a str is a call per step (issue #22)
                value = str(value)
            if value not in allowed:
                return False
        return True

    def may_match(self, kind: str) -> bool:
        """Whether an event of type ``kind`` can match this step at all."""
        allowed = self.match.get("type")
        return allowed is None or kind in allowed


@dataclass(frozen=True)
class Funnel:
    name: str
    mode: str  # "sequence" or "pipeline"
    entity: str
    window: int  # seconds
    breakdowns: tuple[str, ...] = ()
    steps: tuple[Step, ...] = ()
    stages: tuple[str, ...] = ()
    pipeline: str | None = None  # deal_stage `pipeline` value this funnel follows
    top_n: int = 20
    extra: dict[str, Any] = field(default_factory=dict)
    # Amounts (purchase value, deal amount) without a currency are in this one.
    currency: str = "USD"
    # Pipeline only: chance that a deal at each stage is won (the forecast's
    # weights); None where not configured, then the observed rate is used.
    probabilities: tuple[float | None, ...] = ()

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps] if self.mode == "sequence" else list(self.stages)


def _fail(where: str, message: str) -> FunnelConfigError:
    return FunnelConfigError(f"{where}: {message}")


def _funnel(raw: Any, where: str, seen: set[str]) -> Funnel:
    if not isinstance(raw, dict):
        raise _fail(where, "each [[funnel]] must be a table")
    name = raw.get("name")
    if not isinstance(name, str) or not re.match(r"^[a-z][a-z0-9_-]{0,63}$", name):
        raise _fail(where, f"field `name`: {name!r} must be a lowercase name like 'shop'")
    where = f"{where} ('{name}')"
    if name in seen:
        raise _fail(where, "field `name`: another funnel has this name")
    seen.add(name)
    known = {"name", "mode", "entity", "window", "breakdowns", "steps", "stages", "top_n"}
    known |= {"pipeline", "currency", "probabilities"}
    unknown = set(raw) - known
    if unknown:
        raise _fail(where, f"unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    mode = raw.get("mode", "sequence")
    if mode not in ("sequence", "pipeline"):
        raise _fail(where, f"field `mode`: {mode!r} must be 'sequence' or 'pipeline'")
    entity = raw.get("entity", "visitor_id" if mode == "sequence" else "deal_id")
    if entity not in EVENT_FIELDS or not entity.endswith("_id"):
        raise _fail(where, f"field `entity`: {entity!r} is not an id field of the events")
    try:
        window = parse_duration(raw.get("window", "7d"))
    except ValueError as exc:
        raise _fail(where, f"field `window`: {exc}") from None
    breakdowns = raw.get("breakdowns", [])
    if not isinstance(breakdowns, list) or any(b not in ATTRIBUTION for b in breakdowns):
        raise _fail(where, f"field `breakdowns`: {breakdowns!r}; allowed: {list(ATTRIBUTION)}")
    top_n = raw.get("top_n", 20)
    if not isinstance(top_n, int) or not 1 <= top_n <= 1000:
        raise _fail(where, f"field `top_n`: {top_n!r} must be an integer from 1 to 1000")
    currency = raw.get("currency", "USD")
    if not isinstance(currency, str) or not re.match(r"^[A-Z]{3}$", currency):
        raise _fail(where, f"field `currency`: {currency!r} must be an ISO 4217 code like 'USD'")
    common = {
        "currency": currency,
        "name": name,
        "mode": mode,
        "entity": entity,
        "window": window,
        "breakdowns": tuple(breakdowns),
        "top_n": top_n,
    }
    if mode == "pipeline":
        return _pipeline(raw, where, common)
    return _sequence(raw, where, common)


def _pipeline(raw: dict, where: str, common: dict[str, Any]) -> Funnel:
    stages = raw.get("stages")
    if not isinstance(stages, list) or len(stages) < 2:
        raise _fail(where, "field `stages`: a pipeline needs a list of at least 2 stages")
    for i, stage in enumerate(stages, 1):
        if not isinstance(stage, str) or not stage:
            raise _fail(where, f"stage {i}: {stage!r} must be a non-empty string")
    if len(set(stages)) != len(stages):
        raise _fail(where, "field `stages`: stage names must be unique")
    if "steps" in raw:
        raise _fail(where, "field `steps`: a pipeline has `stages`, not `steps`")
    probabilities = _probabilities(raw.get("probabilities", {}), stages, where)
    return Funnel(
        stages=tuple(stages),
        pipeline=raw.get("pipeline"),
        probabilities=probabilities,
        **common,
    )


def _sequence(raw: dict, where: str, common: dict[str, Any]) -> Funnel:
    if "probabilities" in raw:
        raise _fail(where, "field `probabilities`: only a pipeline has stage probabilities")
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or len(steps_raw) < 2:
        raise _fail(where, "field `steps`: a sequence needs a list of at least 2 steps")
    steps = [_step(step, f"{where}, step {i}") for i, step in enumerate(steps_raw, 1)]
    if len({s.name for s in steps}) != len(steps):
        raise _fail(where, "field `steps`: step names must be unique")
    return Funnel(steps=tuple(steps), **common)


def _step(step: Any, step_where: str) -> Step:
    if not isinstance(step, dict):
        raise _fail(step_where, "must be a table like { name = ..., match = {...} }")
    step_name = step.get("name")
    if not isinstance(step_name, str) or not step_name:
        raise _fail(step_where, f"field `name`: {step_name!r} must be a non-empty string")
    step_where = f"{step_where} ('{step_name}')"
    match = step.get("match")
    if not isinstance(match, dict) or not match:
        raise _fail(step_where, "field `match`: must be a table of event field = value")
    clean: dict[str, frozenset[str]] = {}
    for key, value in match.items():
        if key not in EVENT_FIELDS:
            raise _fail(step_where, f"field `match.{key}`: events have no field {key!r}")
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str | int | bool) for v in values):
            raise _fail(step_where, f"field `match.{key}`: {value!r} must be a value or list")
        if key == "type" and not set(map(str, values)) <= set(EVENT_TYPES):
            raise _fail(step_where, f"field `match.type`: {value!r}; types: {list(EVENT_TYPES)}")
        clean[key] = frozenset(str(v).lower() if isinstance(v, bool) else str(v) for v in values)
    return Step(step_name, clean)


def _probabilities(raw: Any, stages: list[str], where: str) -> tuple[float | None, ...]:
    """``{ stage = chance won }``; stages left out use the observed rate."""
    if not isinstance(raw, dict):
        raise _fail(where, "field `probabilities`: must be a table like { proposal = 0.4 }")
    for stage, p in raw.items():
        if stage not in stages:
            raise _fail(where, f"field `probabilities.{stage}`: not a stage of this pipeline")
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise _fail(where, f"field `probabilities.{stage}`: {p!r} must be from 0 to 1")
    return tuple(float(raw[s]) if s in raw else None for s in stages)


def parse_funnels(text: str, source: str = "<funnels>") -> list[Funnel]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FunnelConfigError(f"{source}: not valid TOML: {exc}") from None
    raw = doc.get("funnel")
    if not isinstance(raw, list) or not raw:
        raise FunnelConfigError(f"{source}: no [[funnel]] tables")
    seen: set[str] = set()
    return [_funnel(f, f"{source}: funnel {i}", seen) for i, f in enumerate(raw, 1)]


def load_funnels(path: str | Path | None = None) -> list[Funnel]:
    """Funnels from ``path``, or the defaults shipped in the package."""
    if path:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise FunnelConfigError(f"{path}: cannot read funnels file: {exc}") from None
        return parse_funnels(text, str(path))
    text = resources.files("stream.core").joinpath(DEFAULT_FUNNELS).read_text()
    return parse_funnels(text, f"stream/{DEFAULT_FUNNELS}")
