"""POST /api/tracking-numbers: a call-tracking number for a visitor's page.

The request body is ``{visitor_id, session_id, channel, source, campaign,
keyword}`` (DESIGN.md section 6); the lease itself is the worker's (Redis).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import orjson

from stream.api.views import Response
from stream.core.rate_limit import RateLimit, retry_seconds
from stream.core.tracking import lease_request

MAX_BODY = 4096  # bytes of a write request's JSON body


class LeaseUnavailable(Exception):
    """The tracking store cannot lease now (Redis down): the page should retry."""


Lease = Callable[[dict, float], Awaitable[dict]]


class LeaseLimits:
    """How often one session and one client address may lease a number: a bot
    asking thousands of times drained the pool, and real visitors got the
    static number (their calls unattributed for the lease time)."""

    def __init__(self, per_session: float, per_client: float) -> None:
        self.per_session = per_session
        self.per_client = per_client
        self.session = RateLimit(per_session, burst=max(1, int(per_session)))
        self.client = RateLimit(per_client, burst=max(1, int(per_client)))


def too_many(who: str, per_minute: float, wait: float) -> Response:
    seconds = retry_seconds(wait)
    return Response(
        {
            "error": f"too many tracking number requests from this {who} "
            f"(at most {per_minute:g} a minute); retry in {seconds} s",
            "limited_by": who,
        },
        429,
        headers={"Retry-After": str(seconds)},
    )


def authorised(token: str, authorization: str) -> bool:
    """With ``FUNNEL_API_TOKEN`` set, only ``Authorization: Bearer <token>`` may write
    (and read per-visitor answers)."""
    if not token:
        return True
    return hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode())


def unauthorised() -> Response:
    return Response(
        {"error": "missing or wrong bearer token (FUNNEL_API_TOKEN)"},
        401,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def tracking_number(
    raw: bytes,
    authorization: str,
    token: str,
    lease: Lease,
    now: float,
    client: str = "",
    limits: LeaseLimits | None = None,
) -> Response:
    """``raw`` is the body as read, at most MAX_BODY + 1 bytes; ``client`` the
    caller's address, limited with ``limits`` per address and per session."""
    if not authorised(token, authorization):
        return unauthorised()
    if limits is not None and (wait := limits.client.retry_after(client, now)):
        return too_many("client address", limits.per_client, wait)
    if len(raw) > MAX_BODY:
        return Response({"error": f"body over {MAX_BODY} bytes"}, 413)
    try:
        request = lease_request(orjson.loads(raw or b"null"))
    except (ValueError, orjson.JSONDecodeError) as exc:
        return Response({"error": f"tracking number request: {exc}"}, 400)
    session = request.get("session_id") or request["visitor_id"]
    if limits is not None and (wait := limits.session.retry_after(session, now)):
        return too_many("session", limits.per_session, wait)
    try:
        got = await lease(request, now)
    except LeaseUnavailable as exc:
        return Response(
            {"error": f"call tracking store (Redis) unavailable: {exc}; retry"},
            503,
            headers={"Retry-After": "1"},
        )
    return Response(got)
