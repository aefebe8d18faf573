"""Is a webhook really from its vendor? One check per vendor's scheme.

Each returns None when the request passes, else why not (for the 401 answer);
every comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

HUBSPOT_MAX_AGE_MS = 5 * 60 * 1000  # HubSpot: reject a timestamp older than 5 minutes


def basic_auth(authorization: str, user: str, password: str) -> str | None:
    """Pipedrive: the webhook's HTTP Basic user and password."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return "missing HTTP Basic credentials (set them on the webhook)"
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:
        return "HTTP Basic credentials are not base64"
    if not hmac.compare_digest(given, f"{user}:{password}".encode()):
        return "wrong HTTP Basic user or password"
    return None


def hubspot_v3(
    secret: str, method: str, uri: str, body: bytes, timestamp: str, signature: str, now_ms: float
) -> str | None:
    """HubSpot's X-HubSpot-Signature-v3: base64 HMAC-SHA256 of method + URI +
    body + X-HubSpot-Request-Timestamp, keyed with the app's client secret."""
    if not signature or not timestamp:
        return "missing X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp"
    try:
        age = now_ms - int(timestamp)
    except ValueError:
        return "X-HubSpot-Request-Timestamp is not a number"
    if age > HUBSPOT_MAX_AGE_MS:
        return "X-HubSpot-Request-Timestamp is older than 5 minutes (a replayed request?)"
    message = method.encode() + uri.encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    if not hmac.compare_digest(base64.b64encode(digest), signature.encode()):
        return "X-HubSpot-Signature-v3 does not match (client secret, or the public URL?)"
    return None


def hmac_sha256(secret: str, body: bytes, signature: str) -> str | None:
    """A telephony provider's hex HMAC-SHA256 of the body ("sha256=" prefix allowed)."""
    if not signature:
        return "missing signature header"
    given = signature.strip().removeprefix("sha256=")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.lower().encode(), expected.encode()):
        return "signature does not match the body (HMAC-SHA256 with the shared secret)"
    return None


def shared_secret(secret: str, given: str) -> str | None:
    """amoCRM does not sign its webhooks: a secret in the webhook URL (?secret=)."""
    if not given:
        return "missing ?secret= in the webhook URL"
    if not hmac.compare_digest(given.encode(), secret.encode()):
        return "wrong ?secret= in the webhook URL"
    return None


def sign_hubspot_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """The signature HubSpot would send (for tests and local tries)."""
    message = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def sign_hmac_sha256(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
