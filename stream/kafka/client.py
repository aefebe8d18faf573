"""How every Kafka client of the project connects: bootstrap plus SSL/SASL settings.

One place, so that the worker (Faust), the producer, the demo, the refetcher
and the admin calls of `funnel stack` all reach an external, secured Kafka the
same way once FUNNEL_KAFKA_SECURITY_PROTOCOL and friends are set.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from stream.config import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
TOPIC_ALREADY_EXISTS = 36  # Kafka error code


def check(settings: Settings) -> None:
    """Raise ValueError naming the setting that cannot work."""
    protocol, mechanism = settings.kafka_security_protocol, settings.kafka_sasl_mechanism
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"FUNNEL_KAFKA_SECURITY_PROTOCOL={protocol!r}: expected one of {', '.join(PROTOCOLS)}"
        )
    if protocol.startswith("SASL"):
        if mechanism not in MECHANISMS:
            expected = ", ".join(MECHANISMS)
            raise ValueError(
                f"FUNNEL_KAFKA_SASL_MECHANISM={mechanism!r}: expected one of {expected}"
            )
        if not settings.kafka_sasl_username or not settings.kafka_sasl_password:
            raise ValueError(
                f"FUNNEL_KAFKA_SECURITY_PROTOCOL={protocol} needs FUNNEL_KAFKA_SASL_USERNAME "
                "and FUNNEL_KAFKA_SASL_PASSWORD"
            )


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    return ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
    check(settings)
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return options


async def create_topics(
    settings: Settings, names: list[str], configs: dict[str, dict[str, str]] | None = None
) -> list[str]:
    """Create the topics of ``names`` that are missing; return those created.

    Safe when several workers do it at once (a topic another one just created
    counts as existing). Partitions and replication come from the settings,
    per-topic configuration (e.g. cleanup.policy) from ``configs``.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in names if t not in existing]
        if not wanted:
            return []
        configs = configs or {}
        new = [
            NewTopic(
                t,
                settings.partitions,
                settings.replication_factor,
                topic_configs=configs.get(t, {}),
            )
            for t in wanted
        ]
        response = await admin.create_topics(new, timeout_ms=30000)
        created = []
        for topic, code, *rest in response.topic_errors:
            if code == 0:
                created.append(topic)
            elif code != TOPIC_ALREADY_EXISTS:
                message = rest[0] if rest else ""
                raise RuntimeError(f"creating topic {topic!r} failed: error {code} {message}")
        await wait_listed(admin, wanted)
        return created
    finally:
        await admin.close()


async def wait_listed(admin: Any, names: list[str], timeout: float = 30.0) -> None:
    """Wait until the broker's metadata lists ``names``.

    CreateTopics answers once the controller has created a topic; the broker
    that answers metadata learns of it a moment later. A worker started right
    after ``funnel topics`` found its topics missing and exited (seen in a
    loop of the chaos suite, which creates a run's topics just before it
    starts the worker).
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        missing = set(names) - set(await admin.list_topics())
        if not missing:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"topic(s) {', '.join(sorted(missing))} created but not listed "
                               f"by the broker after {timeout:.0f} s")  # fmt: skip
        await asyncio.sleep(0.1)


class MissingTopics(Exception):
    """Topics we read or write do not exist (the broker does not auto-create them)."""

    def __init__(self, bootstrap: str, missing: list[str]) -> None:
        super().__init__(
            f"topic(s) {', '.join(missing)} do not exist on the Kafka cluster at {bootstrap}; "
            "create them first: `funnel topics` (or the topics job in Kubernetes)"
        )
        self.missing = missing


async def missing_topics(settings: Settings, names: list[str]) -> list[str]:
    """Those of ``names`` the cluster does not have."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    return [t for t in names if t not in existing]


def input_topics(settings: Settings) -> list[str]:
    return sorted(set(settings.topics.values()))


async def check_topics(settings: Settings, client: Any, names: list[str]) -> None:
    """Raise MissingTopics naming those of ``names`` the cluster lacks (``client``: a
    started aiokafka client). Without the check a send to a missing topic waits a
    minute for metadata and then fails without naming the topic."""
    cluster = await client.fetch_all_metadata()
    missing = sorted(set(names) - cluster.topics())
    if missing:
        raise MissingTopics(settings.kafka_bootstrap, missing)


async def start_producer(settings: Settings, producer: Any, check: bool = True) -> None:
    """Start an aiokafka producer and, with ``check``, make sure the input topics
    exist (MissingTopics otherwise); on any failure stop it again, else
    "Unclosed AIOKafkaProducer" follows the real error."""
    try:
        await producer.start()
        if check:
            await check_topics(settings, producer.client, input_topics(settings))
    except BaseException:
        await producer.stop()
        raise


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` for the same settings (None for PLAINTEXT)."""
    import faust

    check(settings)
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    # Faust picks SASL_SSL when given a context, SASL_PLAINTEXT otherwise.
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=ssl_context(settings),
    )
