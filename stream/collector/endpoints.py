"""What each collector endpoint answers (DESIGN.md section 9), free of aiohttp.

``app.py`` reads the request and writes the ``Answer``; everything a client
can observe (status, body, what reaches Kafka) is decided here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from stream.collector import signatures
from stream.collector.batch import (
    BadRequest,
    Forbidden,
    Record,
    Rejected,
    dead_letter_headers,
    events_of,
    prepare_all,
)
from stream.collector.metrics import CollectorMetrics
from stream.collector.sender import Message, Sender, Unavailable
from stream.collector.touch import touch_of
from stream.collector.vendors import Unmappable, map_payload
from stream.collector.webhook_config import Hook
from stream.collector.write_keys import Source, key_of, source_of
from stream.config import Settings
from stream.core.rate_limit import RateLimit, retry_seconds
from stream.core.tracking import TOUCH_FIELDS

RETRY_AFTER = "5"  # seconds a client waits after a 503 (Kafka away)
WEBHOOK_TYPES = frozenset({"deal_stage", "call"})


@dataclass
class Answer:
    body: Any = None
    status: int = 200
    headers: dict[str, str] | None = None


def error(status: int, message: str, **headers: str) -> Answer:
    return Answer({"error": message}, status, headers or None)


def unavailable(exc: Exception) -> Answer:
    message = (
        f"{exc}; this request is not acknowledged: send it again (events count once by event_id)"
    )
    return error(503, message, **{"Retry-After": RETRY_AFTER})


@dataclass
class Request:
    """The parts of an HTTP request the endpoints look at."""

    body: bytes
    headers: dict[str, str]  # names as sent; looked up case-insensitively by ``header``
    query: dict[str, str]
    method: str = "POST"
    url: str = ""
    client: str = ""

    def header(self, name: str) -> str:
        lower = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lower), "")


Lease = Callable[[bytes, str], Awaitable[tuple[int, Any]]]  # body, client -> status, answer


def lease_body(raw: bytes) -> bytes:
    """The worker's lease request from the page's: its visitor and session, and
    the session's touch from the landing ``url`` and ``referrer`` it sends (the
    rules of touch.py), unless it names the touch fields itself."""
    try:
        doc = orjson.loads(raw or b"null")
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("body: must be a JSON object")
    out = {k: doc[k] for k in ("visitor_id", "session_id", *TOUCH_FIELDS) if doc.get(k)}
    if not any(k in out for k in TOUCH_FIELDS) and isinstance(doc.get("url"), str):
        referrer = doc.get("referrer") if isinstance(doc.get("referrer"), str) else ""
        out.update(touch_of(doc["url"], referrer))
    return orjson.dumps({k: v[:128] if isinstance(v, str) else v for k, v in out.items()})


class Collector:
    def __init__(
        self,
        settings: Settings,
        sources: list[Source],
        hooks: dict[str, Hook],
        sender: Sender,
        lease: Lease | None = None,
    ) -> None:
        self.settings = settings
        self.sources = sources
        self.hooks = hooks
        self.sender = sender
        self.lease = lease
        self.metrics = CollectorMetrics()
        per_client = settings.leases_per_client
        self.lease_limit = RateLimit(per_client, burst=max(1, int(per_client)))

    async def _send(
        self, records: list[Record], rejected: list[Rejected], endpoint: str, source: str
    ) -> None:
        """Records and the dead letters of the rejected, acknowledged together."""
        messages: list[Message] = [(r.topic, r.key, r.value, []) for r in records]
        dead = self.settings.dead_letter_topic
        for bad in rejected:
            messages.append((dead, None, bad.value, dead_letter_headers(bad, endpoint, source)))
        await self.sender.send(messages)
        self.metrics.pending.set(self.sender.pending)
        for record in records:
            self.metrics.accepted.labels(source, record.type).inc()
        for bad in rejected:
            self.metrics.rejected.labels(endpoint, bad.reason).inc()

    async def batch(self, request: Request) -> Answer:
        """POST /v1/batch."""
        source = source_of(
            self.sources, key_of(request.header("Authorization"), request.query.get("key", ""))
        )
        if source is None:
            return error(
                401,
                "missing or unknown write key (Authorization: Bearer <key>, or ?key= for beacons)",
                **{"WWW-Authenticate": "Bearer"},
            )
        try:
            events = events_of(request.body)
            records, rejected = prepare_all(events, source, self.settings.topics, time.time())
        except BadRequest as exc:
            return error(exc.status, exc.message)
        except Forbidden as exc:
            return error(403, str(exc))
        try:
            await self._send(records, rejected, "/v1/batch", source.name)
        except Unavailable as exc:
            return unavailable(exc)
        return Answer({"accepted": len(records), "rejected": [r.answer() for r in rejected]})

    def _verify(self, hook: Hook, request: Request) -> str | None:
        """None when the webhook is really from its vendor, else why not."""
        if not hook.secret:
            return f"webhook source {hook.name!r} has no secret: set {hook.secret_env}"
        if hook.vendor == "pipedrive":
            return signatures.basic_auth(request.header("Authorization"), hook.user, hook.secret)
        if hook.vendor == "hubspot":
            return signatures.hubspot_v3(
                hook.secret,
                request.method,
                hook.url or request.url,
                request.body,
                request.header("X-HubSpot-Request-Timestamp"),
                request.header("X-HubSpot-Signature-v3"),
                time.time() * 1000,
            )
        if hook.vendor == "amocrm":
            return signatures.shared_secret(hook.secret, request.query.get("secret", ""))
        return signatures.hmac_sha256(
            hook.secret, request.body, request.header(hook.signature_header)
        )

    async def webhook(self, name: str, request: Request) -> Answer:
        """POST /v1/webhooks/{name}."""
        hook = self.hooks.get(name)
        if hook is None:
            return error(404, f"no webhook source {name!r}; configured: {sorted(self.hooks)}")
        if why := self._verify(hook, request):
            return error(401, f"webhook {name}: {why}")
        endpoint = f"/v1/webhooks/{name}"
        source = Source(name, "", WEBHOOK_TYPES)
        try:
            events = map_payload(hook, request.body, self.settings.caller_salt)
            records, rejected = prepare_all(events, source, self.settings.topics, time.time())
        except Unmappable as exc:
            records, rejected = [], [Rejected(0, "unmappable", str(exc), request.body)]
        try:
            await self._send(records, rejected, endpoint, name)
        except Unavailable as exc:
            return unavailable(exc)
        if rejected:
            reasons = [r.answer() for r in rejected]
            return Answer(
                {
                    "error": f"webhook {name}: payload cannot be mapped to events "
                    "(kept on the dead-letter topic)",
                    "rejected": reasons,
                    "accepted": len(records),
                },
                422,
            )
        return Answer({"accepted": len(records)})

    async def number(self, request: Request) -> Answer:
        """POST /v1/number: a tracking number for the page's session, leased by
        the worker; limited per client address here, per session there."""
        if self.lease is None:
            return error(404, "tracking numbers are not configured on this collector")
        if wait := self.lease_limit.retry_after(request.client, time.time()):
            seconds = str(retry_seconds(wait))
            return error(
                429,
                f"too many tracking number requests from this address; retry in {seconds} s",
                **{"Retry-After": seconds},
            )
        try:
            body = lease_body(request.body)
        except ValueError as exc:
            return error(400, f"tracking number request: {exc}")
        try:
            status, body = await self.lease(body, request.client)
        except (OSError, ValueError) as exc:  # unreachable, timed out, or not JSON
            return error(
                503,
                f"tracking numbers unavailable (worker at "
                f"{self.settings.collector_lease_url}): {exc}",
                **{"Retry-After": "5"},
            )
        return Answer(body, status)
