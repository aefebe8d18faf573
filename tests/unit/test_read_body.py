"""Request bodies are read to the end: aiohttp's ``read(n)`` returns what has
arrived, so a body of several TCP segments came back cut (a 400 "not JSON"
instead of the event, or no 413 for a body over the limit)."""

from __future__ import annotations

import asyncio

from stream.net import read_body


class Segments:
    """A stream that hands out one segment per read, like aiohttp's StreamReader."""

    def __init__(self, body: bytes, segment: int) -> None:
        self.parts = [body[i : i + segment] for i in range(0, len(body), segment)]

    async def read(self, n: int) -> bytes:
        if not self.parts:
            return b""
        part = self.parts.pop(0)
        if len(part) > n:
            part, rest = part[:n], part[n:]
            self.parts.insert(0, rest)
        return part


def test_a_body_of_many_segments_is_read_whole():
    body = b'{"batch": [' + b'"x",' * 5000 + b'"y"]}'
    assert asyncio.run(read_body(Segments(body, 1400), 100_000)) == body


def test_a_body_over_the_limit_reads_one_byte_more_and_stops():
    body = b"z" * 10_000
    got = asyncio.run(read_body(Segments(body, 1400), 4096))
    assert got == body[:4097]
