"""The funnel engine through the real stack: API == `funnel replay` == oracle."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest

from stream.core.funnels import load_funnels
from stream.kafka.producer import FunnelProducer
from stream.ops.stack import Stack
from stream.tools.cli import main
from stream.tools.replay import replay
from tests.support import (
    WorkerProcess,
    committed_to_the_end,
    free_port,
    http_get,
    http_json,
    metric_sum,
    offset_rows,
    offsets_report,
    settings_for,
    unique_env,
    wait_for,
    watermarks_at_least,
)
from tests.workload import n_dup, oracle_docs, send_docs, wait_answer, workload

pytestmark = pytest.mark.integration


def test_api_replay_and_oracle_agree_on_the_same_events(stack, stack_env, tmp_path, capsys):
    env = unique_env(stack_env)
    settings = settings_for(env)
    asyncio.run(Stack(settings).create_topics())
    worker = WorkerProcess(env, free_port()).start()
    try:
        docs = workload(3000, seed=11)
        send_docs(settings, docs)
        path = tmp_path / "events.jsonl"
        path.write_text("".join(json.dumps(d) + "\n" for d in docs))
        offline = replay(
            path,
            load_funnels(),
            settings.bucket,
            settings.lateness,
            settings.dedup_horizon,
            progress=False,
        )
        assert offline["events"]["late"] == 0 and offline["events"]["duplicate"] == n_dup(docs)
        wants = oracle_docs(docs, settings)
        for f in load_funnels():
            want = wants[f.name]
            assert next(d for d in offline["funnels"] if d["funnel"] == f.name) == want

            def api_doc(name=f.name):
                return http_json(f"{worker.url}/api/funnels/{name}?window=all")

            try:
                wait_for(lambda w=want, a=api_doc: a() == w, 90, f"API for {f.name} == oracle")
            except AssertionError:
                assert api_doc() == want, worker.log_tail()
            # /metrics exports the same counts (all events are within the last 24 h),
            # and every breakdown's capped values add up to the same totals.
            metrics = worker.metrics()
            for step in want["steps"]:
                labels = {"funnel": f.name, "step": step["name"], "window": "24h"}
                got = metric_sum(metrics, "funnel_step_reached", breakdown="", **labels)
                assert got == step["reached"], (f.name, step)
                for dim in f.breakdowns:
                    by_dim = metric_sum(metrics, "funnel_step_reached", breakdown=dim, **labels)
                    assert by_dim == step["reached"], (f.name, dim, step)
            for dim in f.breakdowns:
                got = http_json(f"{worker.url}/api/funnels/{f.name}?window=all&breakdown={dim}")
                want_b = offline_breakdown(path, settings, f.name, dim)
                assert got["breakdown"] == want_b
            # `funnel report` shows the API's numbers.
            capsys.readouterr()
            assert main(["report", "--url", worker.url, "--funnel", f.name, "--window", "all"]) == 0
            table = capsys.readouterr().out
            for step in want["steps"]:
                row = next(line for line in table.splitlines() if line.startswith(step["name"]))
                assert row.split()[1] == str(step["reached"]), table
        # Parameters are checked and named.
        status, body = http_get(f"{worker.url}/api/funnels/nope")
        assert status == 404 and json.loads(body)["parameter"] == "name"
        status, body = http_get(f"{worker.url}/api/funnels/shop?window=7y")
        assert status == 400 and json.loads(body)["parameter"] == "window"
        status, body = http_get(f"{worker.url}/api/funnels/shop?breakdown=manager")
        assert status == 400 and json.loads(body)["parameter"] == "breakdown"
        metrics = worker.metrics()
        assert metric_sum(metrics, "funnel_events_late_total") == 0
        assert metric_sum(metrics, "funnel_time_to_convert_seconds_count", funnel="shop") > 0
        # An event older than the watermark minus the shop's 7-day window and the
        # lateness is late: counted per funnel (tests/integration/test_backlog.py
        # checks its dead letter).
        late = {
            "event_id": "late-1",
            "type": "visit",
            "occurred_at": datetime.fromtimestamp(time.time() - 8 * 86400, tz=UTC).isoformat(),
            "visitor_id": "v1",
        }

        async def send_late() -> None:
            async with FunnelProducer(settings) as producer:
                await producer.send(late)

        # Late is judged against the watermark: wait until the idle sources (here the
        # empty ads.spend) let it move up to the workload's event time.
        wait_for(
            lambda: watermarks_at_least(worker, settings, time.time() - 3600),
            settings.idle_timeout + 30,
            "every partition's watermark within the last hour",
        )
        asyncio.run(send_late())
        wait_for(
            lambda: metric_sum(worker.metrics(), "funnel_events_late_total", funnel="shop") == 1,
            30,
            "the late event to be counted for the shop funnel",
        )
    finally:
        worker.stop()


def test_any_worker_answers_for_all_partitions(stack, stack_env):
    """Two workers share four partitions: each answers the whole funnel; metrics add up."""
    # A long session timeout: a stopped worker that failed to leave the group would
    # hold its partitions for 30 s and then rebalance: beyond the deadline below.
    # A token: the abandoned carts list (visitor ids) is private, and each worker
    # asks its peer for their part with it.
    env = unique_env(
        stack_env, FUNNEL_PARTITIONS="4", FUNNEL_SESSION_TIMEOUT="30", FUNNEL_API_TOKEN="t0ken"
    )
    settings = settings_for(env)
    asyncio.run(Stack(settings).create_topics())
    workers = [WorkerProcess(env, free_port(), name=f"w{i}").start() for i in range(2)]
    try:
        docs = workload(2000, seed=5)
        send_docs(settings, docs)
        wants = oracle_docs(docs, settings)
        for f in load_funnels():
            for w in workers:
                url = f"{w.url}/api/funnels/{f.name}?window=all"
                wait_answer(url, wants[f.name], settings=settings)

        carts = [f"{w.url}/api/carts/abandoned?hours=840&limit=1000" for w in workers]
        assert all(http_get(url)[0] == 401 for url in carts)
        lists = [http_json(url, token="t0ken") for url in carts]
        assert lists[0]["count"] > 0 and lists[0] == lists[1]

        # Commits keep up: every funnel.events partition's committed offset reaches
        # its end (but for transaction markers), so nothing counted above sits in a
        # transaction that never commits.
        def caught_up() -> bool:
            rows = offset_rows(settings, settings.app_id)
            return committed_to_the_end(settings, settings.events_topic, rows)

        try:
            wait_for(caught_up, 20, "committed offsets at the end of funnel.events")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{offsets_report(settings, settings.app_id)}") from None
        # Each worker exports only the partitions it owns; their sum is the total.
        exported = [w.metrics() for w in workers]
        assert all(metric_sum(m, "funnel_step_reached") > 0 for m in exported)
        for f in load_funnels():
            for step in wants[f.name]["steps"]:
                labels = {"funnel": f.name, "step": step["name"], "window": "24h", "breakdown": ""}
                total = sum(metric_sum(m, "funnel_step_reached", **labels) for m in exported)
                assert total == step["reached"], (f.name, step)
        # A worker going away leaves its partitions unanswered until the rebalance
        # hands them over; then the survivor answers for all of them.
        # A worker stopped with SIGTERM leaves the group at once (no session timeout
        # for the survivor to sit out) and logs no error on the way out.
        stopped = time.monotonic()
        assert workers[1].stop() == 0, workers[1].log_tail()
        log_text = workers[1].log_path.read_text(errors="replace")
        assert "Error while stopping" not in log_text, workers[1].log_tail()
        for f in load_funnels():
            url = f"{workers[0].url}/api/funnels/{f.name}?window=all"
            wait_answer(url, wants[f.name], timeout=settings.session_timeout, settings=settings)
        print(f"survivor answered for all partitions {time.monotonic() - stopped:.1f}s after stop")
    finally:
        for w in workers:
            w.stop()


def offline_breakdown(path, settings, name: str, dim: str) -> dict:
    doc = replay(
        path,
        load_funnels(),
        settings.bucket,
        settings.lateness,
        settings.dedup_horizon,
        breakdown=dim,
        progress=False,
    )
    return next(d for d in doc["funnels"] if d["funnel"] == name)["breakdown"]
