"""Collector throughput and request latency, beside a raw producer on the same topics.

    python -m bench.collector [--events 100000] [--batch 100] [--clients 8] [--rate 5000]

1. baseline: an aiokafka producer in this process (idempotent, acks=all)
   sending the same events in the same batches from ``--clients`` senders, each
   awaiting its batch's acknowledgement: what one process can write with the
   collector's guarantee, without HTTP, parsing or validation;
2. the collector (`funnel collector`, a subprocess) under ``--clients``
   concurrent clients posting ``--batch`` events a request as fast as answered:
   accepted events/s and request latency p50/p99/max at that rate;
3. the same at a paced ``--rate`` events/s: latency at a normal load.

The load generator runs on the same 2-core machine, so the figures are a floor.
Results: bench/results/collector.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson

from bench.common import attribution, write_result
from stream.config import Settings
from stream.kafka.client import client_options
from stream.ops.stack import Stack
from tests.support import CollectorProcess, free_port, settings_for

REPO = Path(__file__).resolve().parents[1]


def events(n: int, seed: int = 3) -> list[dict]:
    import random

    rng = random.Random(seed)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 600)) + ".000+00:00"
    out = []
    for i in range(n):
        doc = {"event_id": f"b{i}", "occurred_at": stamp, "visitor_id": f"v{i % 20000}"}
        kind = rng.choices(["visit", "signup", "cart"], [60, 15, 25])[0]
        if kind == "visit":
            doc.update(type="visit", session_id=f"s{i}", url="https://shop.example/p/1")
        elif kind == "signup":
            doc.update(type="signup", user_id=f"u{i}")
        else:
            doc.update(type="cart", action="add", value=19.9, currency="EUR")
        out.append({**doc, **attribution(rng)})
    return out


async def raw_producer(settings: Settings, batches: list[list[dict]], clients: int) -> dict:
    """Baseline: validate-free produce of the same batches, each acknowledged before
    its sender takes the next, ``clients`` senders at once (as the HTTP clients)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        **client_options(settings), enable_idempotence=True, acks="all", linger_ms=2
    )
    await producer.start()
    try:

        async def sender(mine: list[list[dict]]) -> None:
            for batch in mine:
                futures = [
                    await producer.send(
                        settings.topics[d["type"]], orjson.dumps(d), key=d["visitor_id"].encode()
                    )
                    for d in batch
                ]
                await asyncio.gather(*futures)

        started = time.perf_counter()
        await asyncio.gather(*(sender(batches[i::clients]) for i in range(clients)))
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    total = sum(len(b) for b in batches)
    return {"events": total, "seconds": round(elapsed, 2), "events_per_s": round(total / elapsed)}


async def load(url: str, batches: list[list[dict]], clients: int, rate: float | None) -> dict:
    """Post every batch; with ``rate``, start them at that many events a second."""
    from aiohttp import ClientSession, TCPConnector

    queue: asyncio.Queue = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(orjson.dumps({"batch": batch}))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    size = len(batches[0])
    started = time.perf_counter()

    async def client(session: ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            if rate:
                due = started + (len(batches) - queue.qsize() - 1) * size / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            t0 = time.perf_counter()
            async with session.post(url, data=body) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
            latencies.append(time.perf_counter() - t0)

    async with ClientSession(connector=TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    total = statuses.get(200, 0) * size
    return {
        "clients": clients,
        "batch": size,
        "paced_rate": rate,
        "accepted_events": total,
        "statuses": statuses,
        "seconds": round(elapsed, 2),
        "events_per_s": round(total / elapsed),
        "p50_s": round(statistics.median(latencies), 4),
        "p99_s": round(latencies[int(len(latencies) * 0.99) - 1], 4),
        "max_s": round(latencies[-1], 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=float, default=5000.0)
    args = parser.parse_args(argv)
    tag = uuid.uuid4().hex[:6]
    env = {**os.environ, "FUNNEL_TOPIC_PREFIX": f"benchc{tag}."}
    settings = settings_for(env)
    up = subprocess.run([sys.executable, "-m", "stream", "stack", "up"], env=env, cwd=REPO)
    if up.returncode != 0:
        return up.returncode
    asyncio.run(Stack(settings).create_topics())
    docs = events(args.events)
    batches = [docs[i : i + args.batch] for i in range(0, len(docs), args.batch)]
    print(f"raw producer: {len(docs)} events in batches of {args.batch} ...", flush=True)
    raw = asyncio.run(raw_producer(settings, batches, args.clients))
    print(f"raw producer: {raw['events_per_s']} events/s", flush=True)
    collector = CollectorProcess({**env, "FUNNEL_RUN_DIR": str(settings.run_dir)}, free_port())
    collector.start()
    try:
        url = collector.url + "/v1/batch"
        # A second copy of the events (new ids) for each run, so none is a duplicate.
        fast = asyncio.run(load(url, batches, args.clients, None))
        print(f"collector, {args.clients} clients: {fast['events_per_s']} events/s, "
              f"p99 {fast['p99_s']} s", flush=True)  # fmt: skip
        paced_docs = [{**d, "event_id": d["event_id"] + "p"} for d in docs]
        paced_batches = [paced_docs[i : i + args.batch] for i in range(0, len(docs), args.batch)]
        paced = asyncio.run(load(url, paced_batches, args.clients, args.rate))
        print(f"collector at {args.rate:g} events/s: p50 {paced['p50_s']} s, "
              f"p99 {paced['p99_s']} s, max {paced['max_s']} s", flush=True)  # fmt: skip
        rss = collector.peak_rss_mb()
    finally:
        collector.stop()
    fast["ratio_vs_raw_producer"] = round(fast["events_per_s"] / raw["events_per_s"], 3)
    path = write_result(
        "collector",
        {"raw_producer": raw, "collector_max": fast, "collector_paced": paced,
         "collector_peak_rss_mb": round(rss)},
    )  # fmt: skip
    print(f"x{fast['ratio_vs_raw_producer']} of the raw producer; peak RSS {rss:.0f} MB; {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
