"""POST /api/tracking-numbers: a call-tracking number for a visitor's page.

The request body is ``{visitor_id, session_id, channel, source, campaign,
keyword}`` (DESIGN.md section 6); the lease itself is the worker's (Redis).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import orjson

from stream.api.views import Response
from stream.core.tracking import lease_request

MAX_BODY = 4096  # bytes of a write request's JSON body


class LeaseUnavailable(Exception):
    """The tracking store cannot lease now (Redis down): the page should retry."""


Lease = Callable[[dict, float], Awaitable[dict]]


def authorised(token: str, authorization: str) -> bool:
    """With ``FUNNEL_API_TOKEN`` set, only ``Authorization: Bearer <token>`` may write."""
    if not token:
        return True
    return hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode())


async def tracking_number(
    raw: bytes, authorization: str, token: str, lease: Lease, now: float
) -> Response:
    """``raw`` is the body as read, at most MAX_BODY + 1 bytes."""
    if not authorised(token, authorization):
        return Response(
            {"error": "missing or wrong bearer token (FUNNEL_API_TOKEN)"},
            401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if len(raw) > MAX_BODY:
        return Response({"error": f"body over {MAX_BODY} bytes"}, 413)
    try:
        request = lease_request(orjson.loads(raw or b"null"))
    except (ValueError, orjson.JSONDecodeError) as exc:
        return Response({"error": f"tracking number request: {exc}"}, 400)
    try:
        got = await lease(request, now)
    except LeaseUnavailable as exc:
        return Response(
            {"error": f"call tracking store (Redis) unavailable: {exc}; retry"},
            503,
            headers={"Retry-After": "1"},
        )
    return Response(got)
