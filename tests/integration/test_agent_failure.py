"""An agent that fails stops the worker (so a supervisor restarts it) instead of idling."""

from __future__ import annotations

import asyncio
import time

import pytest

from stream.kafka.producer import FunnelProducer
from stream.ops.stack import Stack
from tests.support import WorkerProcess, free_port, settings_for, unique_env

pytestmark = pytest.mark.integration


def test_a_failing_agent_stops_the_worker_with_an_error(stack, stack_env, tmp_path):
    # Inject a bug into the worker process only: its offset planning raises.
    (tmp_path / "sitecustomize.py").write_text(
        "import stream.faust_fixes.missing_offsets as c\n"
        "def boom(*a, **k):\n"
        "    raise RuntimeError('injected failure')\n"
        "c.plan = boom\n"
    )
    env = unique_env(stack_env, PYTHONPATH=str(tmp_path))
    settings = settings_for(env)
    asyncio.run(Stack(settings).create_topics())
    worker = WorkerProcess(env, free_port()).start()
    try:

        async def send() -> None:
            async with FunnelProducer(settings) as producer:
                await producer.send({"type": "visit", "visitor_id": "v1"})

        asyncio.run(send())
        deadline = time.monotonic() + 60
        while worker.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert worker.proc.poll() not in (None, 0), worker.log_tail()
        assert "failed; stopping the worker" in worker.log_path.read_text()
    finally:
        worker.stop()
