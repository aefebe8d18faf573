"""Event contract (DESIGN.md section 3): typed events and a fast validating decoder.

One msgspec tagged union decodes and validates in a single pass in C; the few
rules msgspec cannot express (timestamp with offset and not in the future,
type matching its topic, size) are checked right after. Anything wrong raises
``Rejection`` with a machine-readable reason and a message naming the field;
nothing else ever escapes ``decode``. The JSON Schemas under ``schemas/`` are
the same contract for producers in other languages; tests keep them in step.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from sys import intern
from typing import Annotated, ClassVar, Literal, get_args, get_origin, get_type_hints

import msgspec

MAX_BYTES = 64 * 1024
MAX_FUTURE_S = 3600.0

# RFC 3339 date-time with a mandatory offset, as msgspec's parser reads it (the
# same pattern is in the schemas; the decoder also rejects impossible dates).
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:?[0-9]{2})$"
)

# Machine-readable rejection reasons (dead-letter header `reason`, metric label).
REASONS = (
    "invalid_encoding",
    "invalid_json",
    "not_object",
    "oversize",
    "missing_field",
    "invalid_field",
    "unknown_type",
    "invalid_timestamp",
    "future_timestamp",
    "type_mismatch",
)

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
# The envelope's attribution labels (the breakdown dimensions): few distinct values,
# one copy each (``intern``).
ATTRIBUTION = (
    "channel",
    "source",
    "medium",
    "campaign",
    "keyword",
    "region",
    "device",
    "gender",
    "age_band",
    "manager",
)
Text = Annotated[str, msgspec.Meta(max_length=2048)]
Amount = Annotated[float, msgspec.Meta(ge=0)]
Currency = Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]


class Rejection(Exception):
    """An input message that is not a valid event; ``reason`` is one of REASONS."""

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.field = field


class Event(msgspec.Struct, kw_only=True, tag_field="type", gc=False):
    """Envelope shared by every event type."""

    # The event type: its tag, as a plain class attribute (a property reading
    # the struct config was 5 % of a replay: the engine asks it per step).
    type: ClassVar[str]
    event_id: Id
    occurred_at: Timestamp
    # null means absent, as for every optional field (the schema allows it): version 1.
    schema_version: Annotated[int, msgspec.Meta(ge=1)] | None = 1
    channel: Label | None = None
    source: Label | None = None
    medium: Label | None = None
    campaign: Label | None = None
    keyword: Label | None = None
    region: Label | None = None
    device: Label | None = None
    gender: Label | None = None
    age_band: Label | None = None
    manager: Label | None = None
    # Event time as epoch seconds, filled by ``decode`` (not part of the JSON).
    ts: float = 0.0

    def __post_init__(self) -> None:
        if self.schema_version is None:
            self.schema_version = 1
        # One string object per distinct label, not one per event: a held event
        # kept ~220 bytes of its own copies ("search", "winter", ...; issue #22,
        # memory per journey). Interned strings are freed when unused.
        for name in ATTRIBUTION:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, intern(value))


class Visit(Event, tag="visit", gc=False):
    visitor_id: Id
    session_id: Id | None = None
    url: Text | None = None
    referrer: Text | None = None


class Signup(Event, tag="signup", gc=False):
    visitor_id: Id
    user_id: Id
    method: Literal["newsletter", "account"] | None = None


class Cart(Event, tag="cart", gc=False):
    visitor_id: Id
    action: Literal["add", "remove", "checkout", "purchase"]
    cart_id: Id | None = None
    order_id: Id | None = None
    value: Amount | None = None
    currency: Currency | None = None


class Call(Event, tag="call", gc=False):
    call_id: Id
    tracking_number: Label
    caller_hash: Label | None = None
    direction: Literal["inbound", "outbound"] | None = None
    duration_s: Amount | None = None
    answered: bool | None = None
    deal_id: Id | None = None
    visitor_id: Id | None = None
    session_id: Id | None = None


class DealStage(Event, tag="deal_stage", gc=False):
    deal_id: Id
    stage: Label
    pipeline: Label = "sales"
    previous_stage: Label | None = None
    status: Literal["open", "won", "lost"] | None = None
    amount: Amount | None = None
    currency: Currency | None = None
    lost_reason: Text | None = None
    visitor_id: Id | None = None
    call_id: Id | None = None


Day = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]


class Spend(Event, tag="spend", gc=False):
    """Advertising cost of one channel (and campaign) on one day, from `ads.spend`.

    The newest report (by ``occurred_at``) of a channel, campaign, day and
    currency replaces earlier ones, so ad platforms can re-send corrected costs.
    """

    channel: Label
    day: Day
    cost: Amount
    currency: Currency

    @property
    def spend_key(self) -> str:
        return f"{self.channel}|{self.campaign or ''}|{self.day}|{self.currency}"


AnyEvent = Visit | Signup | Cart | Call | DealStage | Spend
EVENT_TYPES: dict[str, type[Event]] = {
    "visit": Visit,
    "signup": Signup,
    "cart": Cart,
    "call": Call,
    "deal_stage": DealStage,
    "spend": Spend,
}
for _cls in EVENT_TYPES.values():
    _cls.type = _cls.__struct_config__.tag  # type: ignore[misc]
# The entity an event belongs to; the worker re-keys by it.
ENTITY_FIELD = {
    "visit": "visitor_id",
    "signup": "visitor_id",
    "cart": "visitor_id",
    "call": "call_id",
    "deal_stage": "deal_id",
    "spend": "spend_key",
}

_decoder = msgspec.json.Decoder(AnyEvent)
_encoder = msgspec.json.Encoder()
_FIELD_AT = re.compile(r"at `\$\.([A-Za-z0-9_]+)")
_MISSING = re.compile(r"missing required field `([A-Za-z0-9_]+)`")


def _classify(exc: msgspec.ValidationError) -> Rejection:
    text = str(exc)
    missing = _MISSING.search(text)
    if missing:
        return Rejection("missing_field", f"required field `{missing[1]}` is missing", missing[1])
    at = _FIELD_AT.search(text)
    field = at[1] if at else None
    if field is None:
        if text.startswith("Expected `object`"):
            return Rejection("not_object", f"event must be a JSON object ({text})")
        return Rejection("invalid_field", text)
    if field == "type":
        known = ", ".join(EVENT_TYPES)
        return Rejection("unknown_type", f"field `type`: not one of {known}", "type")
    if text.startswith("Invalid enum value"):  # the value itself is not repeated (PII)
        allowed = ", ".join(_allowed_values(field))
        return Rejection("invalid_field", f"field `{field}`: not one of {allowed}", field)
    if field == "occurred_at" and not text.startswith("Expected `datetime`, got"):
        return Rejection(
            "invalid_timestamp",
            "field `occurred_at`: not an RFC 3339 date-time with offset "
            f"({text.split(' - at')[0]})",
            field,
        )
    return Rejection("invalid_field", f"field `{field}`: {text.split(' - at')[0]}", field)


def _allowed_values(field: str) -> list[str]:
    """The values a Literal field of any event type may take."""
    out: list[str] = []
    for cls in EVENT_TYPES.values():
        hint = get_type_hints(cls).get(field)
        for arg in [hint] if get_origin(hint) is Literal else get_args(hint):
            for value in get_args(arg) if get_origin(arg) is Literal else ():
                if value not in out:
                    out.append(value)
    return out


_timestamp_decoder = msgspec.json.Decoder(Timestamp)


def parse_timestamp(value: str, field: str = "occurred_at") -> float:
    """RFC 3339 with offset -> epoch seconds; raises Rejection(invalid_timestamp)."""
    try:
        return _timestamp_decoder.decode(msgspec.json.encode(value)).timestamp()
    except msgspec.ValidationError as exc:
        raise Rejection("invalid_timestamp", f"field `{field}`: {exc}", field) from None


def decode(raw: bytes, expected_type: str | None = None, now: float | None = None) -> AnyEvent:
    """Bytes of one Kafka message -> a validated event, or raise Rejection.

    ``expected_type`` is the type the source topic carries; ``now`` (epoch
    seconds) bounds how far in the future an event may be.
    """
    if len(raw) > MAX_BYTES:
        raise Rejection("oversize", f"message is {len(raw)} bytes, limit {MAX_BYTES}")
    try:
        event = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _classify(exc) from None
    except UnicodeDecodeError as exc:
        raise Rejection("invalid_encoding", f"message is not UTF-8: {exc}") from None
    except msgspec.DecodeError as exc:
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise Rejection("invalid_encoding", f"message is not UTF-8: {uexc}") from None
        raise Rejection("invalid_json", f"message is not valid JSON: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the contract: only Rejection escapes
        raise Rejection("invalid_json", f"message could not be decoded: {exc!r}") from None
    if expected_type is not None and event.type != expected_type:
        raise Rejection(
            "type_mismatch",
            f"field `type`: {event.type!r} on a topic of {expected_type!r} events",
            "type",
        )
    ts = event.occurred_at.timestamp()
    limit = (time.time() if now is None else now) + MAX_FUTURE_S
    if ts > limit:
        raise Rejection(
            "future_timestamp",
            f"field `occurred_at`: {event.occurred_at.isoformat()} is more than 1 h in the future",
            "occurred_at",
        )
    event.ts = ts
    return event


_list_decoder = msgspec.json.Decoder(list[AnyEvent])


def decode_stored(raws: list[bytes]) -> list[AnyEvent]:
    """Events as the worker stored them (each valid when it was written), decoded in
    one call: a restarted worker loads a million of them. ``ts`` is left for the
    caller (``state.decode_journey``). A list that does not decode (an event
    stored by a version with another schema) is decoded one by one, so the
    failing one is named."""
    try:
        return _list_decoder.decode(b"[" + b",".join(raws) + b"]")
    except msgspec.DecodeError:
        return [decode(raw, now=float("inf")) for raw in raws]


def encode(event: Event) -> bytes:
    """Event -> JSON bytes (without the internal ``ts``; ``occurred_at`` from it
    when the event was ``slim``)."""
    data = msgspec.structs.asdict(event)
    data.pop("ts", None)
    data["occurred_at"] = occurred(event)
    data = {k: v for k, v in data.items() if v is not None}
    data["type"] = event.type
    return _encoder.encode(data)


def slim(event: Event) -> None:
    """Let go of a held event's parsed ``occurred_at``: ``ts`` is the same instant
    (a 48-byte datetime of every journey's memory, issue #22). ``occurred`` and
    ``encode`` give it back, in UTC."""
    event.occurred_at = None


def occurred(event: Event) -> datetime:
    """The event's time: its ``occurred_at``, or from ``ts`` once it was ``slim``."""
    return event.occurred_at or datetime.fromtimestamp(event.ts, UTC)


def entity_of(event: Event) -> str:
    """The partitioning key. A call that belongs to a deal goes with the deal, so
    the deal's lead response time (lead -> first answered call) is computed where
    both are; all events of one call should therefore carry its deal_id or none."""
    if event.type == "call" and event.deal_id:
        return event.deal_id
    return getattr(event, ENTITY_FIELD[event.type])
