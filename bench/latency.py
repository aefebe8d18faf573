"""End-to-end latency: from producing an event to its count showing in the API.

    python -m bench.latency [--rates 500,1000,5000] [--seconds 30]
    FUNNEL_COMMIT_INTERVAL=0.2 python -m bench.latency ...   (results: latency-commit-0.2s.json)

Uses the local stack (`funnel stack up`). For each input rate, one worker on
fresh topics; visits (each a new visitor, so each one adds 1 to the shop
funnel's first step) are produced at a fixed rate, every send's wall time is
kept, and the worker's API (`/api/funnels/shop?window=all`) is polled every
50 ms. The k-th event's latency is the first poll that shows at least k visits
minus the k-th send time (poll spacing adds up to 50 ms; events are counted in
production order, as the count is monotone). Figures per rate: p50, p99, max,
and whether the worker kept up (the achieved consumption rate).
The floor is set by the transactions: the counting stage reads the internal
topic read_committed, so an event waits for the normalising stage's commit
(FUNNEL_COMMIT_INTERVAL, default 0.2 s) plus the stages' batching (0.2 s to
normalise, 0.05 s to count).
Results: bench/results/latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import aiohttp
import orjson

from bench.common import write_result
from stream.kafka.client import client_options
from stream.ops.stack import Stack
from tests.support import REPO, WorkerProcess, free_port, settings_for

POLL_S = 0.05


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def latencies(sends: list[float], polls: list[tuple[float, int]]) -> list[float]:
    """Per event k (in send order): first poll time with count >= k+1, minus its send time.

    Events never seen by the last poll are left out (reported as not counted).
    """
    counts = [n for _, n in polls]
    out = []
    for k, sent in enumerate(sends):
        i = bisect.bisect_left(counts, k + 1)
        if i == len(polls):
            break
        out.append(max(0.0, polls[i][0] - sent))
    return out


async def run_rate(settings, url: str, rate: int, seconds: float) -> dict:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_options(settings), linger_ms=2, acks="all")
    await producer.start()
    sends: list[float] = []
    polls: list[tuple[float, int]] = []
    total = int(rate * seconds)
    stop = asyncio.Event()

    async def poll() -> None:
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                try:
                    async with http.get(f"{url}/api/funnels/shop?window=all") as resp:
                        if resp.status == 200:
                            n = (await resp.json())["steps"][0]["reached"]
                            polls.append((time.time(), n))
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(POLL_S)

    poller = asyncio.create_task(poll())
    topic = settings.topics["visit"]
    tag = uuid.uuid4().hex[:6]
    start = time.time()
    try:
        for k in range(total):
            due = start + k / rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.time()
            doc = {
                "event_id": f"lat-{tag}-{k}",
                "type": "visit",
                "occurred_at": datetime.fromtimestamp(now, UTC).isoformat(),
                "visitor_id": f"v-{tag}-{k}",
                "channel": "search",
            }
            await producer.send(topic, orjson.dumps(doc), key=doc["visitor_id"].encode())
            sends.append(now)
            if k % max(1, rate) == 0:
                print(f"\rrate {rate}/s: sent {k}/{total}", end="", file=sys.stderr, flush=True)
        await producer.flush()
        produced_s = time.time() - start
        deadline = time.time() + max(60.0, seconds * 3)
        while time.time() < deadline and (not polls or polls[-1][1] < total):
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await poller
        await producer.stop()
    print(file=sys.stderr)
    lat = sorted(latencies(sends, polls))
    counted = polls[-1][1] if polls else 0
    last_seen = next((t for t, n in polls if n >= total), None)
    return {
        "rate": rate,
        "commit_interval_s": settings.commit_interval,
        "events": total,
        "produced_per_s": round(total / produced_s),
        "counted": counted,
        "consumed_per_s": round(total / (last_seen - start)) if last_seen else None,
        "p50_s": round(percentile(lat, 0.5), 3),
        "p99_s": round(percentile(lat, 0.99), 3),
        "max_s": round(lat[-1], 3) if lat else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,1000,5000", help="events/s, comma separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of input per rate")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    settings = settings_for(env)
    up = subprocess.run([sys.executable, "-m", "stream", "stack", "up"], env=env, cwd=REPO)
    if up.returncode != 0:
        return up.returncode
    runs = []
    for rate in (int(r) for r in args.rates.split(",")):
        tag = uuid.uuid4().hex[:6]
        run_env = {
            **env,
            "FUNNEL_TOPIC_PREFIX": f"lat{tag}.",
            "FUNNEL_APP_ID": f"bench-lat-{tag}",
            "FUNNEL_REDIS_PREFIX": f"bench-lat-{tag}:",
            "FUNNEL_LOG_LEVEL": "warning",
            "FUNNEL_RUN_DIR": str(settings.run_dir),
        }
        run_settings = settings_for(run_env)
        asyncio.run(Stack(run_settings).create_topics())
        worker = WorkerProcess(run_env, free_port(), name=f"latency-{rate}").start()
        try:
            runs.append(asyncio.run(run_rate(run_settings, worker.url, rate, args.seconds)))
        finally:
            worker.stop(60)
        r = runs[-1]
        print(
            f"{rate:>6}/s (commit every {settings.commit_interval:g}s): p50 {r['p50_s']}s  "
            f"p99 {r['p99_s']}s  max {r['max_s']}s  "
            f"consumed {r['consumed_per_s']}/s  counted {r['counted']}/{r['events']}"
        )
    name = (
        "latency"
        if settings.commit_interval == 1.0
        else f"latency-commit-{settings.commit_interval:g}s"
    )
    path = write_result(name, {"seconds_per_rate": args.seconds, "runs": runs})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
