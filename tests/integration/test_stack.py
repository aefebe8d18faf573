"""The local stack itself: idempotent start, status, clear errors, Kafka transactions."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid

import pytest

from stream.ops.stack import Stack
from tests.support import REPO, TEST_ENV, free_port, http_json, settings_for, wait_for

pytestmark = pytest.mark.integration


def funnel(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def test_second_up_is_harmless_and_status_reports_every_component(stack, stack_env):
    again = funnel(stack_env, "stack", "up")
    assert again.returncode == 0, again.stderr
    for name in ("kafka", "redis", "prometheus", "alertmanager"):
        assert f"{name}" in again.stdout and "already running" in again.stdout

    status = funnel(stack_env, "stack", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert set(report) == {"kafka", "redis", "prometheus", "alertmanager"}
    for name, port_var in [
        ("kafka", "FUNNEL_KAFKA_PORT"),
        ("redis", "FUNNEL_REDIS_PORT"),
        ("prometheus", "FUNNEL_PROMETHEUS_PORT"),
        ("alertmanager", "FUNNEL_ALERTMANAGER_PORT"),
    ]:
        assert report[name]["healthy"] is True
        assert report[name]["address"] == f"127.0.0.1:{TEST_ENV[port_var]}"


def test_every_topic_exists_with_configured_partitions(stack, stack_env):
    from aiokafka.admin import AIOKafkaAdminClient

    settings = settings_for(stack_env)
    names = Stack(settings).topic_names()

    async def partitions() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(names)
            return {d["topic"]: len(d["partitions"]) for d in described}
        finally:
            await admin.close()

    found = asyncio.run(partitions())
    for topic in names:
        assert found.get(topic) == settings.partitions, (topic, found)


def test_prometheus_loaded_project_rules_and_alertmanager(stack, stack_env):
    prom = TEST_ENV["FUNNEL_PROMETHEUS_PORT"]
    rules = http_json(f"http://127.0.0.1:{prom}/api/v1/rules")
    names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
    assert {"FunnelWorkerDown", "FunnelNoEvents", "funnel:events:rate1m"} <= names

    def alertmanager_active() -> bool:
        ams = http_json(f"http://127.0.0.1:{prom}/api/v1/alertmanagers")
        active = [a["url"] for a in ams["data"]["activeAlertmanagers"]]
        return any(TEST_ENV["FUNNEL_ALERTMANAGER_PORT"] in url for url in active)

    # Prometheus discovers its Alertmanager a moment after it reports ready.
    wait_for(alertmanager_active, 30, "Prometheus to list the local Alertmanager")


def test_kafka_transactions_commit_and_abort(stack, stack_env):
    """exactly_once rests on broker transactions: committed data is visible, aborted is not."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from stream.kafka.client import create_topics

    settings = settings_for(stack_env)
    topic = f"txn-check-{uuid.uuid4().hex[:8]}"

    async def run() -> list[bytes]:
        await create_topics(settings, [topic])  # the broker does not auto-create them
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, transactional_id=f"tx-{topic}"
        )
        await producer.start()
        try:
            # One partition, so the order read back is the order written.
            async with producer.transaction():
                await producer.send_and_wait(topic, b"committed", partition=0)
            await producer.begin_transaction()
            await producer.send_and_wait(topic, b"aborted", partition=0)
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send_and_wait(topic, b"after", partition=0)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_bootstrap,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            seen: list[bytes] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(seen) < 2:
                batch = await consumer.getmany(timeout_ms=500)
                seen += [m.value for msgs in batch.values() for m in msgs]
            return seen
        finally:
            await consumer.stop()

    assert asyncio.run(run()) == [b"committed", b"after"]


def test_taken_port_gives_a_clear_error_not_a_hang(tmp_path):
    """A foreign process on the port: `stack up` fails fast and names the port."""
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        env = {
            **TEST_ENV,
            "PATH": __import__("os").environ["PATH"],
            "FUNNEL_RUN_DIR": str(tmp_path / "run"),
            "FUNNEL_REDIS_PORT": str(port),
        }
        started = time.monotonic()
        result = funnel(env, "stack", "up", "redis", timeout=30)
        took = time.monotonic() - started
    assert result.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert "FUNNEL_REDIS_PORT" in result.stderr
    assert took < 15


def test_component_that_dies_reports_its_log_tail(tmp_path):
    """A component that exits while starting fails with its log, not a timeout."""
    bad_rules = tmp_path / "not-a-config.yml"
    bad_rules.write_text("global: [this is not valid\n")
    env = {
        **TEST_ENV,
        "PATH": __import__("os").environ["PATH"],
        "FUNNEL_RUN_DIR": str(tmp_path / "run"),
        "FUNNEL_PROMETHEUS_PORT": str(free_port()),
    }
    settings = settings_for(env)
    stack = Stack(settings, out=open("/dev/null", "w"))  # noqa: SIM115
    stack._prometheus_prepare()
    (settings.run_dir / "prometheus" / "prometheus.yml").write_text(bad_rules.read_text())
    stack.components["prometheus"].prepare = lambda: None
    from stream.ops.stack import StackError

    with pytest.raises(StackError, match="prometheus exited with code"):
        stack.start("prometheus")


def test_kafka_format_accepts_a_cluster_id_starting_with_a_dash(tmp_path, monkeypatch):
    """1 in 64 random ids starts with "-"; CI met one that argparse read as an option."""
    import uuid as uuid_mod

    env = {**TEST_ENV, "PATH": __import__("os").environ["PATH"], "FUNNEL_RUN_DIR": str(tmp_path)}
    stack = Stack(settings_for(env), out=open("/dev/null", "w"))  # noqa: SIM115
    monkeypatch.setattr(
        "stream.ops.stack.uuid.uuid4", lambda: uuid_mod.UUID(bytes=b"\xf8" + bytes(15))
    )
    stack._kafka_prepare()
    meta = (tmp_path / "kafka" / "data" / "meta.properties").read_text()
    assert "cluster.id=-" in meta


def test_missing_topics_are_an_error_that_names_them(stack, stack_env, tmp_path):
    """The broker does not auto-create topics: producing to, or starting a worker
    on, topics nobody created fails at once with their names (not a minute-long
    metadata wait, not a topic made with default settings)."""
    from tests.support import unique_env

    env = unique_env(stack_env)
    prefix = env["FUNNEL_TOPIC_PREFIX"]
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "visit", "event_id": "e1", "visitor_id": "v1"}\n')
    produce = funnel(env, "produce", str(events), timeout=60)
    assert produce.returncode == 2, produce.stderr
    assert f"{prefix}shop.visits" in produce.stderr and "funnel topics" in produce.stderr
    worker = funnel({**env, "FUNNEL_WEB_PORT": str(free_port())}, "worker", timeout=120)
    assert worker.returncode == 2, worker.stderr[-2000:]
    assert f"{prefix}shop.visits" in worker.stderr and "do not exist" in worker.stderr
