"""The live page's files (stream/api/web), served by the worker itself."""

from __future__ import annotations

from stream.static_files import static_file


def asset(name: str) -> tuple[bytes, str] | None:
    """A file of stream/api/web by bare name, with its content type; None if there is none."""
    return static_file("stream.api", "web", name)
