"""Small network checks shared by the worker and the local stack (no project imports)."""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from typing import Any


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any interface


def redacted_url(url: str) -> str:
    """A URL fit for logs: any password replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


async def read_body(content: Any, limit: int) -> bytes:
    """A request body up to ``limit`` + 1 bytes (one more tells "too big").

    aiohttp's ``content.read(n)`` returns what has arrived so far, which for a
    body of more than one TCP segment is a part of it: read until the end.
    """
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
