"""Vendor webhook payloads -> section 3 events (``deal_stage`` and ``call``).

Pure: a payload in, event documents out, or ``Unmappable`` naming the field.
Each event gets an ``event_id`` made from the vendor's own ids, so a webhook
the vendor delivers again (they all retry) counts once. A change that is not a
stage move (a title edit) gives no event. A stage the mapping does not know is
sent under the vendor's own id: the worker counts it as unmatched and leaves
the deal where it is (DESIGN.md section 4), as for any stage a CRM adds.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson

from stream.collector.webhook_config import Hook


class Unmappable(ValueError):
    """A payload that cannot become events; the message names the field."""


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Unmappable(f"body is not JSON: {exc}") from None


def _id(value: Any, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise Unmappable(
            f"field `{field}`: an id (string or integer) is required, got {type(value).__name__}"
        )
    return str(value)


def _deal(hook: Hook, deal_id: str, vendor_stage: str, previous: str | None) -> dict[str, Any]:
    """A deal_stage event's stage and status from the vendor's stage."""
    target = hook.stages.get(vendor_stage, vendor_stage)
    doc: dict[str, Any] = {"type": "deal_stage", "deal_id": deal_id, "pipeline": hook.pipeline}
    if target == "won":
        return {**doc, "stage": "won", "status": "won"}
    if target == "lost":
        # Lost where it stood: the stage it left, when the vendor says which.
        before = hook.stages.get(previous or "", previous)
        return {**doc, "stage": before or vendor_stage, "status": "lost"}
    return {**doc, "stage": target}


def pipedrive(hook: Hook, body: bytes) -> list[dict[str, Any]]:
    """Pipedrive deal webhooks, v2 (``data``/``previous``/``meta.entity``) or v1
    (``current``/``previous``/``meta.object``)."""
    doc = _json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("meta"), dict):
        raise Unmappable("field `meta`: a Pipedrive webhook has a meta object")
    meta = doc["meta"]
    if (meta.get("entity") or meta.get("object")) != "deal":
        return []  # a person or an activity: nothing for the funnels
    deal = doc.get("data") or doc.get("current")
    if not isinstance(deal, dict):
        return []  # a deleted deal carries no current state
    previous = doc.get("previous") if isinstance(doc.get("previous"), dict) else {}
    status = deal.get("status")
    stage_id = _id(deal.get("stage_id"), "data.stage_id")
    old_stage = previous.get("stage_id")
    if previous and str(old_stage) == stage_id and previous.get("status", status) == status:
        return []  # not a stage or status change
    deal_id = _id(deal.get("id"), "data.id")
    out = _deal(hook, deal_id, stage_id, str(old_stage) if old_stage is not None else None)
    if status in ("won", "lost"):
        out["status"] = status
        if status == "won":
            out["stage"] = "won"
    if deal.get("lost_reason"):
        out["lost_reason"] = str(deal["lost_reason"])[:2048]
    _money(out, deal.get("value"), deal.get("currency"))
    _manager(hook, out, deal.get("owner_id") or deal.get("user_id"))
    out["occurred_at"] = _pipedrive_time(deal.get("update_time"), meta.get("timestamp"))
    out["event_id"] = f"pipedrive-{deal_id}-{stage_id}-{status}-{out['occurred_at']}"
    return [out]


def _pipedrive_time(update_time: Any, timestamp: Any) -> str:
    """v2 sends RFC 3339; v1 "YYYY-MM-DD HH:MM:SS" in UTC; meta.timestamp is seconds."""
    if isinstance(update_time, str) and re.match(
        r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d", update_time
    ):
        text = update_time.replace(" ", "T")
        return text if text.endswith("Z") or "+" in text[10:] else text + "Z"
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        return _iso(timestamp)
    raise Unmappable("field `data.update_time` or `meta.timestamp`: when did it change?")


def _money(out: dict[str, Any], value: Any, currency: Any) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        out["amount"] = float(value)
        if isinstance(currency, str) and re.match(r"^[A-Z]{3}$", currency):
            out["currency"] = currency


def _manager(hook: Hook, out: dict[str, Any], owner: Any) -> None:
    if owner is not None and owner != "":
        out["manager"] = hook.managers.get(str(owner), str(owner))[:256]


def hubspot(hook: Hook, body: bytes) -> list[dict[str, Any]]:
    """HubSpot webhooks: a JSON array of events; ``deal.propertyChange`` of
    ``dealstage`` moves a deal (``objectId``) to ``propertyValue``."""
    doc = _json(body)
    if not isinstance(doc, list):
        raise Unmappable("body: HubSpot sends a JSON array of events")
    out = []
    for i, event in enumerate(doc):
        if not isinstance(event, dict):
            raise Unmappable(f"[{i}]: an event must be an object")
        if event.get("subscriptionType") != "deal.propertyChange":
            continue
        if event.get("propertyName") != "dealstage":
            continue
        deal_id = _id(event.get("objectId"), f"[{i}].objectId")
        stage = _id(event.get("propertyValue"), f"[{i}].propertyValue")
        occurred = event.get("occurredAt")
        if not isinstance(occurred, int | float) or isinstance(occurred, bool):
            raise Unmappable(f"field `[{i}].occurredAt`: milliseconds since 1970 are required")
        doc_out = _deal(hook, deal_id, stage, None)
        doc_out["occurred_at"] = _iso(occurred / 1000)
        doc_out["event_id"] = f"hubspot-{_id(event.get('eventId'), f'[{i}].eventId')}"
        out.append(doc_out)
    return out


def _form_rows(body: bytes, prefix: str) -> dict[str, dict[str, str]]:
    """amoCRM's form fields ``leads[status][0][id]=...`` as {"0": {"id": ...}}."""
    rows: dict[str, dict[str, str]] = {}
    pattern = re.compile(re.escape(prefix) + r"\[(\d+)\]\[([a-z_]+)\]$")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        raise Unmappable("body is not UTF-8 form data") from None
    for key, value in pairs:
        if match := pattern.match(key):
            rows.setdefault(match.group(1), {})[match.group(2)] = value
    return rows


def amocrm(hook: Hook, body: bytes) -> list[dict[str, Any]]:
    """amoCRM lead webhooks (form-encoded): ``leads[status]`` (status changed)
    and ``leads[add]`` (a new lead, at its first status)."""
    out = []
    for kind in ("add", "status"):
        for n, lead in sorted(_form_rows(body, f"leads[{kind}]").items()):
            at = f"leads[{kind}][{n}]"
            lead_id = _id(lead.get("id"), f"{at}[id]")
            status = _id(lead.get("status_id"), f"{at}[status_id]")
            doc = _deal(hook, lead_id, status, lead.get("old_status_id"))
            when = lead.get("last_modified") or lead.get("updated_at") or lead.get("date_create")
            if not (when or "").isdigit():
                raise Unmappable(f"field `{at}[last_modified]`: a unix time is required")
            doc["occurred_at"] = _iso(int(when))
            _money(doc, _number(lead.get("price")), None)
            _manager(hook, doc, lead.get("responsible_user_id"))
            doc["event_id"] = f"amocrm-{lead_id}-{status}-{when}"
            out.append(doc)
    if not out and b"leads" not in body:
        raise Unmappable("body: no leads[add] or leads[status] fields (is it amoCRM's form?)")
    return out


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def caller_hash(number: str, salt: str) -> str:
    """A caller's number as the event contract wants it: hashed (digits only, salted)."""
    digits = re.sub(r"\D", "", number)
    return hashlib.sha256(f"{salt}:{digits}".encode()).hexdigest()[:32]


def telephony(hook: Hook, body: bytes, salt: str = "") -> list[dict[str, Any]]:
    """A generic call webhook: one JSON object, field names from the mapping."""
    doc = _json(body)
    if not isinstance(doc, dict):
        raise Unmappable("body: a call webhook is one JSON object")
    names = hook.fields
    out: dict[str, Any] = {"type": "call"}
    out["call_id"] = _id(doc.get(names["call_id"]), names["call_id"])
    out["tracking_number"] = _id(doc.get(names["tracking_number"]), names["tracking_number"])
    caller = doc.get(names["caller"])
    if isinstance(caller, str) and caller:
        out["caller_hash"] = caller_hash(caller, salt)
    for field in ("duration_s", "answered", "direction", "deal_id", "occurred_at"):
        if doc.get(names[field]) is not None:
            out[field] = doc[names[field]]
    if isinstance(out.get("occurred_at"), int | float):
        out["occurred_at"] = _iso(out["occurred_at"])
    if "occurred_at" not in out:
        raise Unmappable(f"field `{names['occurred_at']}`: when the call started is required")
    out["event_id"] = f"{hook.name}-{out['call_id']}"
    return [out]


def map_payload(hook: Hook, body: bytes, salt: str = "") -> list[dict[str, Any]]:
    if hook.vendor == "pipedrive":
        return pipedrive(hook, body)
    if hook.vendor == "hubspot":
        return hubspot(hook, body)
    if hook.vendor == "amocrm":
        return amocrm(hook, body)
    return telephony(hook, body, salt)
