"""The Kafka security settings reach every client: a worker, the producer and the
admin calls work through the local broker's SASL_PLAINTEXT (PLAIN) listener, and a
wrong password fails loudly instead of hanging."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from stream.kafka.producer import FunnelProducer
from stream.ops.stack import Stack
from tests.support import REPO, WorkerProcess, free_port, http_json, settings_for, unique_env
from tests.support import wait_for as wait_until

pytestmark = pytest.mark.integration


def sasl_env(stack_env: dict[str, str], password: str = "funnel-local") -> dict[str, str]:
    return unique_env(
        stack_env,
        FUNNEL_KAFKA_BOOTSTRAP=f"127.0.0.1:{stack_env['FUNNEL_KAFKA_SASL_PORT']}",
        FUNNEL_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        FUNNEL_KAFKA_SASL_MECHANISM="PLAIN",
        FUNNEL_KAFKA_SASL_USERNAME="funnel",
        FUNNEL_KAFKA_SASL_PASSWORD=password,
    )


def test_worker_producer_and_admin_over_sasl_plain(stack, stack_env):
    env = sasl_env(stack_env)
    settings = settings_for(env)
    assert asyncio.run(Stack(settings).create_topics())  # admin client over SASL
    now = time.time()

    async def send() -> None:
        async with FunnelProducer(settings) as producer:  # producer over SASL
            for i in range(40):
                await producer.send(
                    {
                        "event_id": f"sasl-{i}",
                        "type": "visit",
                        "occurred_at": datetime.fromtimestamp(now - 60 + i, tz=UTC).isoformat(),
                        "visitor_id": f"v{i}",
                    }
                )

    asyncio.run(send())
    worker = WorkerProcess(env, free_port()).start()  # Faust consumer + transactions over SASL
    try:
        wait_until(
            lambda: (
                http_json(f"{worker.url}/api/funnels/shop?window=all")["steps"][0]["reached"] == 40
            ),
            60,
            "the worker to count the 40 visits it read over SASL",
        )
    finally:
        worker.stop()


def test_wrong_password_is_an_error_naming_the_broker(stack, stack_env):
    env = sasl_env(stack_env, password="wrong")
    proc = subprocess.run(
        [sys.executable, "-m", "stream", "topics", "create"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout
    err = proc.stderr
    assert "Authentication failed" in err, err[-2000:]  # aiokafka's reason, as logged
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err, err[-2000:]
    assert last.startswith("funnel topics: Kafka at " + env["FUNNEL_KAFKA_BOOTSTRAP"]), last
    assert "SASL_PLAINTEXT PLAIN as 'funnel'" in last and "wrong" not in last, last
