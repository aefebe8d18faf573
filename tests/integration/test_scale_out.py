"""Scale out: 1, 2 and 3 workers on the same input give the oracle's numbers.

The input topics have six partitions. Each worker count runs as its own
consumer group (own app id and internal topic) over the same input, so the
three runs see exactly the same events. For each run: every worker's API
answers for all partitions and equals the oracle (also per channel); the
workers' /metrics add up to the oracle; the real Prometheus's recording rules
(summed over workers) give the same step counts and conversion ratios; and the
answers of the three runs are identical.
"""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest

from stream.core.funnels import load_funnels
from stream.ops.stack import Stack
from tests.support import (
    WorkerProcess,
    free_port,
    http_json,
    metric_sum,
    own_group_env,
    prometheus_query,
    settings_for,
    unique_env,
    wait_for,
)
from tests.workload import oracle_docs, send_docs, wait_answer, workload

pytestmark = pytest.mark.integration
PARTITIONS = 6


def run_workers(env: dict[str, str], n: int, stack_api: Stack) -> list[WorkerProcess]:
    """Start ``n`` workers of one group at once and register them with Prometheus."""
    workers = [WorkerProcess(env, free_port(), name=f"scale{n}-w{i}") for i in range(n)]
    for w in workers:
        w.start_process()
    for w in workers:
        w.wait_ready()
    stack_api.write_scrape_targets([w.port for w in workers], name="scale-out")
    return workers


def answers(worker: WorkerProcess) -> dict[str, dict]:
    """Everything the API says about the run's funnels, for comparing runs."""
    out = {}
    for f in load_funnels():
        base = f"{worker.url}/api/funnels/{f.name}?window=all"
        out[f.name] = http_json(base)
        out[f"{f.name}/cohort"] = http_json(base + "&view=cohort")
        for dim in f.breakdowns:
            out[f"{f.name}/{dim}"] = http_json(f"{base}&breakdown={dim}")["breakdown"]
    return out


def prometheus_steps(port: int, funnel: str) -> dict[str, float]:
    rows = prometheus_query(port, f'funnel:step_reached:sum{{funnel="{funnel}",window="24h"}}')
    return {r["metric"]["step"]: float(r["value"][1]) for r in rows}


def prometheus_agrees(port: int, funnel: str, steps: list[dict]) -> bool:
    """funnel:step_reached:sum equals the oracle and funnel:conversion:ratio its ratios."""
    if prometheus_steps(port, funnel) != {s["name"]: float(s["reached"]) for s in steps}:
        return False
    rows = prometheus_query(port, f'funnel:conversion:ratio{{funnel="{funnel}",window="24h"}}')
    got = {r["metric"]["step"]: float(r["value"][1]) for r in rows}
    return all(
        math.isclose(got.get(step["name"], -1), step["reached"] / prev["reached"])
        for prev, step in zip(steps, steps[1:], strict=False)
        if prev["reached"]
    )


def test_one_two_and_three_workers_agree_with_the_oracle(stack, stack_env):
    base = unique_env(stack_env, FUNNEL_PARTITIONS=str(PARTITIONS), FUNNEL_SESSION_TIMEOUT="10")
    settings = settings_for(base)
    stack_api = Stack(settings)
    asyncio.run(stack_api.create_topics())
    docs = workload(2500, seed=23)
    send_docs(settings, docs)
    wants = oracle_docs(docs, settings)
    prom = settings.prometheus_port
    runs: dict[int, dict[str, dict]] = {}
    timings: dict[int, float] = {}
    try:
        for n in (1, 2, 3):
            env = own_group_env(base, f"n{n}")
            run_settings = settings_for(env)
            started = time.monotonic()
            workers = run_workers(env, n, stack_api)
            try:
                # Any worker answers for all six partitions with the oracle's numbers.
                for f in load_funnels():
                    for w in workers:
                        url = f"{w.url}/api/funnels/{f.name}?window=all"
                        wait_answer(url, wants[f.name], timeout=120, settings=run_settings)
                timings[n] = time.monotonic() - started
                per_worker = [answers(w) for w in workers]
                assert all(a == per_worker[0] for a in per_worker), f"{n} workers disagree"
                runs[n] = per_worker[0]
                # Each worker exports only its own partitions; together they are the total,
                # and with n > 1 every worker owns some.
                exported = [w.metrics() for w in workers]
                assert all(metric_sum(m, "funnel_step_reached") > 0 for m in exported)
                for f in load_funnels():
                    for step in wants[f.name]["steps"]:
                        labels = {"funnel": f.name, "step": step["name"], "window": "24h"}
                        got = sum(
                            metric_sum(m, "funnel_step_reached", breakdown="", **labels)
                            for m in exported
                        )
                        assert got == step["reached"], (n, f.name, step)
                # Prometheus's recording rules sum over the workers: same counts, and the
                # conversion ratios are ratios of those sums (polled together: a late
                # rebalance briefly leaves partitions unexported).
                for f in load_funnels():
                    wait_for(
                        lambda f=f: prometheus_agrees(prom, f.name, wants[f.name]["steps"]),
                        30,
                        f"Prometheus recording rules for {f.name} over {n} workers",
                    )
            finally:
                for w in workers:
                    w.stop()
        # The three runs answer exactly alike, breakdowns and cohort view included.
        assert runs[1] == runs[2] == runs[3], json.dumps(
            {n: runs[n]["shop"]["steps"] for n in runs}
        )[:2000]
        print("time to the oracle's answer:", {n: f"{t:.1f}s" for n, t in timings.items()})
    finally:
        stack_api.write_scrape_targets([], name="scale-out")
