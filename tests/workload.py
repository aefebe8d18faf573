"""A seeded event log of known content, what the oracle says of it, and helpers to
send it to the real stack and wait for the API to agree (integration and chaos)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from datetime import UTC, datetime

import orjson

from stream.core.event_counts import minute_bucket
from stream.core.events import decode
from stream.core.funnels import load_funnels
from stream.core.summary import summarise
from stream.kafka.producer import FunnelProducer
from tests.oracle import oracle_counts
from tests.support import http_get, offsets_report, wait_for

STAGES = ["lead", "contacted", "qualified", "proposal", "negotiation", "won", "on-hold"]
CHANNELS = ["search", "social", "email", "direct"]


def workload(
    n: int, seed: int, visitors: int = 150, deals: int = 60, spend: bool = False
) -> list[dict]:
    """Visits, signups, carts, calls and deal stages over the last ~8 minutes
    (with ``spend``, the day's ad spend per channel too), shuffled, with resends.

    The span stays within the allowed lateness: the worker reads its topics at
    their own pace, so any arrival order must be acceptable for the stream and
    the file to see the same events.
    """
    rng = random.Random(seed)
    now = time.time()
    ts = now - 500
    docs = []
    for i in range(n):
        ts += rng.uniform(0, 480 / n)
        kind = rng.choice(["visit", "visit", "signup", "cart", "cart", "call", "deal_stage"])
        doc = {
            "event_id": f"w{seed}-{i}",
            "type": kind,
            "occurred_at": datetime.fromtimestamp(ts, tz=UTC).isoformat(),
            "channel": rng.choice(CHANNELS),
            "region": rng.choice(["north", "south"]),
            "device": rng.choice(["mobile", "desktop"]),
        }
        if kind in ("visit", "signup", "cart"):
            doc["visitor_id"] = f"v{rng.randrange(visitors)}"
        if kind == "signup":
            doc["user_id"] = f"u{i}"
        if kind == "cart":
            doc["action"] = rng.choice(["add", "add", "checkout", "purchase", "remove"])
        if kind == "call":
            doc.update(call_id=f"c{i}", tracking_number="tn-1", answered=rng.random() < 0.7)
        if kind == "deal_stage":
            doc.update(
                deal_id=f"d{rng.randrange(deals)}",
                stage=rng.choice(STAGES),
                manager=rng.choice(["ann", "bob", "cem"]),
            )
            doc["status"] = rng.choice([None, None, None, "won", "lost"])
            if doc["status"] == "lost":
                doc["lost_reason"] = rng.choice(["price", "timing"])
        docs.append({k: v for k, v in doc.items() if v is not None})
    if spend:
        day = datetime.fromtimestamp(now, tz=UTC).date().isoformat()
        for j, channel in enumerate(CHANNELS):
            at = datetime.fromtimestamp(now - 400 + 60 * j, tz=UTC).isoformat()
            docs.append(
                {
                    "event_id": f"w{seed}-spend-{channel}",
                    "type": "spend",
                    "occurred_at": at,
                    "channel": channel,
                    "day": day,
                    "cost": round(rng.uniform(50, 500), 2),
                    "currency": "USD",
                }
            )
    # Arrival order: shuffled within 3 minutes of event time, some resent.
    arrival = sorted(docs, key=lambda d: decode(orjson.dumps(d)).ts + rng.uniform(0, 180))
    for d in rng.sample(docs, n // 20):
        # A resend arrives after the original, within a few positions.
        first = arrival.index(d)
        arrival.insert(min(len(arrival), first + 1 + rng.randrange(30)), d)
    return arrival


def oracle_docs(
    docs: list[dict],
    settings,
    view: str = "period",
    breakdown: str | None = None,
    sources: list[str] | None = None,
) -> dict[str, dict]:
    """The oracle's document of every funnel over all the events (``window=all``).

    ``sources[i]`` is the input source of ``docs[i]`` (see tests/oracle.py)."""
    events = [decode(orjson.dumps(d)) for d in docs]
    funnels = load_funnels()
    oracle = oracle_counts(funnels, events, settings.bucket, settings.lateness, sources)
    skip = "cohort" if view == "period" else "reached"
    out = {}

    def sums_of(funnel: str) -> dict:
        sums: dict = {}
        for (name, metric, step, _bucket, dim, value), c in oracle.items():
            if name == funnel and metric != skip:
                sums[(metric, step, dim, value)] = sums.get((metric, step, dim, value), 0) + c
        return sums

    for f in funnels:
        if breakdown is None or breakdown in f.breakdowns:
            out[f.name] = summarise(
                f, sums_of(f.name), "all", None, None, view, breakdown, sums_of("_spend")
            )
    return out


def events_per_minute(docs: list[dict]) -> dict[str, dict[str, int]]:
    """Distinct events per type and minute: what `/api/events-per-minute` must say
    of a log with no late events, each event_id counted once however often sent."""
    out: dict[str, Counter[str]] = {}
    for doc in {d["event_id"]: d for d in docs}.values():
        ev = decode(orjson.dumps(doc))
        out.setdefault(ev.type, Counter())[minute_bucket(ev.ts)] += 1
    return {kind: dict(sorted(c.items())) for kind, c in sorted(out.items())}


def total(per_minute: dict[str, dict[str, int]]) -> int:
    """All events of an ``events_per_minute`` answer (or of the API's)."""
    return sum(n for minutes in per_minute.values() for n in minutes.values())


def send_docs(settings, docs: list[dict]) -> None:
    async def send() -> None:
        async with FunnelProducer(settings) as producer:
            for d in docs:
                await producer.send(d, wait=False)
            await producer.flush()

    asyncio.run(send())


def wait_answer(url: str, want: dict, timeout: float = 90, settings=None) -> None:
    """Poll ``url`` until it answers ``want``; on timeout say what it answered last."""
    last: list = [None, b""]

    def check() -> bool:
        last[:] = http_get(url)
        return last[0] == 200 and json.loads(last[1]) == want

    try:
        wait_for(check, timeout, f"{url} == oracle")
    except AssertionError as exc:
        status, body = last
        got = json.loads(body) if status == 200 else body[:300]
        if status == 200:
            got = [(s["name"], s["reached"]) for s in got["steps"]]
        wanted = [(s["name"], s["reached"]) for s in want["steps"]]
        diff = "\n".join(differences(json.loads(body), want)[:20]) if status == 200 else ""
        report = offsets_report(settings, settings.app_id) if settings is not None else ""
        raise AssertionError(
            f"{exc}: last answer {status} {got!r}; want {wanted!r}\n"
            f"differences (path: got != want):\n{diff}\n{report}"
        ) from None


def differences(got: object, want: object, path: str = "") -> list[str]:
    """Every leaf where two JSON documents differ, as 'path: got != want'."""
    if isinstance(got, dict) and isinstance(want, dict):
        out = []
        for key in sorted(got.keys() | want.keys(), key=str):
            out += differences(got.get(key), want.get(key), f"{path}/{key}")
        return out
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        out = []
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            out += differences(a, b, f"{path}/{i}")
        return out
    return [] if got == want else [f"{path}: {got!r} != {want!r}"]


def n_dup(docs: list[dict]) -> int:
    return len(docs) - len({d["event_id"] for d in docs})
