"""The live page's files (stream/api/web), served by the worker itself: no CDN, no internet."""

from __future__ import annotations

from functools import cache
from importlib import resources

CONTENT_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}


@cache
def asset(name: str) -> tuple[bytes, str] | None:
    """A file of stream/web by bare name, with its content type; None if there is none."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or "\\" in name or suffix not in CONTENT_TYPES:
        return None
    path = resources.files("stream.api").joinpath("web", name)
    if not path.is_file():
        return None
    return path.read_bytes(), CONTENT_TYPES[suffix]
