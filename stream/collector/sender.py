"""The collector's Kafka side: send a request's records, answer only once acknowledged.

One idempotent producer (acks=all) per process, started on first use and
started again after a failure, so the collector comes up and answers 503
while the broker is away instead of refusing to start. Pending (sent, not yet
acknowledged) events are bounded: over the bound a request is refused before
anything of it is sent, so a broker outage cannot fill the process's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from stream.config import Settings
from stream.kafka.client import check_topics, client_options, input_topics, start_producer

log = logging.getLogger("funnel.collector")

Message = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers


class Unavailable(Exception):
    """Kafka did not acknowledge in time, or cannot be reached: answer 503."""


class Sender:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pending = 0  # events sent and not yet acknowledged
        self._producer: Any = None
        self._starting = asyncio.Lock()

    @property
    def ready(self) -> bool:
        return self._producer is not None

    async def _started(self) -> Any:
        async with self._starting:
            if self._producer is None:
                from aiokafka import AIOKafkaProducer

                producer = AIOKafkaProducer(
                    **client_options(self.settings),
                    enable_idempotence=True,
                    acks="all",
                    linger_ms=2,
                    request_timeout_ms=30000,
                )
                try:
                    await asyncio.wait_for(
                        self._start(producer), self.settings.collector_ack_timeout
                    )
                except Exception as exc:
                    await producer.stop()
                    raise Unavailable(
                        f"Kafka at {self.settings.kafka_bootstrap} not usable: "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
                self._producer = producer
            return self._producer

    async def _start(self, producer: Any) -> None:
        """Start, and check that every topic it writes exists (MissingTopics names
        them; a send to a missing topic would wait a minute for metadata)."""
        await start_producer(self.settings, producer, check=False)
        topics = [*input_topics(self.settings), self.settings.dead_letter_topic]
        await check_topics(self.settings, producer.client, topics)

    async def _reset(self) -> None:
        """Drop a producer after an error other than a timeout: the next request
        starts a fresh one (a clean idempotence epoch)."""
        async with self._starting:
            producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def send(self, messages: Iterable[Message]) -> None:
        """Send ``messages`` and wait until Kafka acknowledged all of them; raise
        Unavailable otherwise (some may have been written: the client resends and
        the worker's event_id de-dup counts each once)."""
        batch = list(messages)
        if not batch:
            return
        if self.pending + len(batch) > self.settings.collector_max_pending:
            raise Unavailable(f"{self.pending} events are waiting for Kafka; retry later")
        producer = await self._started()
        self.pending += len(batch)
        futures = []
        try:
            for topic, key, value, headers in batch:
                futures.append(await producer.send(topic, value, key=key, headers=headers or None))
            # wait, not wait_for(gather): a timeout must not cancel the deliveries.
            _, late = await asyncio.wait(futures, timeout=self.settings.collector_ack_timeout)
            if late:
                raise Unavailable(
                    f"Kafka did not acknowledge within {self.settings.collector_ack_timeout:g} s"
                )
            for future in futures:
                future.result()  # raises a delivery's error
        except Unavailable:
            raise
        except Exception as exc:
            log.warning("kafka send failed: %s: %s", type(exc).__name__, exc)
            await self._reset()
            raise Unavailable(f"Kafka send failed: {type(exc).__name__}: {exc}") from None
        finally:
            self._release(futures, len(batch))

    def _release(self, futures: list[asyncio.Future], count: int) -> None:
        """Count pending events down as their acknowledgements arrive (or fail)."""
        unsent = count - len(futures)
        self.pending -= unsent
        for future in futures:
            if future.done():
                self._done(future)
            else:
                future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future) -> None:
        self.pending -= 1
        if not future.cancelled():
            future.exception()  # retrieved: no "never retrieved" warning

    async def warm_up(self, every: float = 5.0) -> None:
        """Start the producer now, retrying until Kafka answers (readiness waits on it)."""
        while self._producer is None:
            try:
                await self._started()
            except Unavailable as exc:
                log.warning("kafka not reachable; writes answer 503 until it is: %s", exc)
                await asyncio.sleep(every)

    async def stop(self) -> None:
        await self._reset()
