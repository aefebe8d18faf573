"""Topics of raw bytes decoded without Faust's serializer registry.

Faust turns every message into an event through ``Schema.compile``'s
``decode``: the registry's ``loads_key`` and ``loads_value`` (a codec lookup
and a type check each) and ``app.create_event``, which reads ``app.conf.Event``
through the settings' ``__getattribute__``, per message. For topics of raw
bytes (``key_serializer="raw"``, ``value_serializer="raw"``, bytes types: our
input topics and the events topic) all of it hands the bytes on unchanged; a
py-spy profile of one worker (``python -m bench.scale --profile``) had it at
3 % of the main thread. ``RawSchema`` makes the same event from the message's
key, value and headers directly.

Part of the slowness of a naive Faust agent, faust-streaming/faust#563
(DESIGN.md section 7); ``Schema.compile`` of faust-streaming 0.15.3.
Delete when: Faust's decode of raw topics costs nothing more than this;
tests/unit/test_faust_speed.py shows both give the same event.
"""

from __future__ import annotations

from typing import Any

import faust


class RawSchema(faust.Schema):
    """Bytes keys and values, as they came."""

    def __init__(self) -> None:
        super().__init__(
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    def compile(self, app: Any, **_: Any) -> Any:  # noqa: ANN401 - Faust's DecodeFunction
        event_class = app.conf.Event

        async def decode(message: Any, *, propagate: bool = False) -> Any:  # noqa: ANN401
            return event_class(app, message.key, message.value, message.headers, message)

        return decode
