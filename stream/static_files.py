"""Files served from the package itself (the live page, the tracker, the sample
shop): no CDN, no internet, and no path ever leaves the folder named."""

from __future__ import annotations

from functools import cache
from importlib import resources

CONTENT_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}


@cache
def static_file(package: str, folder: str, name: str) -> tuple[bytes, str] | None:
    """A file of ``package``'s ``folder`` by bare name, with its content type;
    None if there is none, or the name is a path or of another kind."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or "\\" in name or suffix not in CONTENT_TYPES:
        return None
    path = resources.files(package).joinpath(folder, name)
    if not path.is_file():
        return None
    return path.read_bytes(), CONTENT_TYPES[suffix]
