"""Demo traffic: a shop and a CRM with realistic funnels, and injectable drop-offs.

``Traffic`` is a pure, seeded simulation: visitors arrive (following a daily
rhythm) from channels, regions and devices with their own conversion rates,
sign up, add to and remove from carts, check out and buy (repeat customers
come back and buy more often); some call a tracking number, and answered
calls become deals that managers move through the sales pipeline, sometimes
skipping or going back a stage, until they are won or lost with a reason.
Each visitor's events are scheduled seconds to minutes apart in event time.

``--drop STEP=FACTOR@MINUTE`` multiplies the chance of reaching STEP by
FACTOR from that minute of the run on (e.g. ``checkout=0.1@5``: a broken
checkout five minutes in), so the drop-off alert can be seen firing.

``produce`` sends the events as they fall due, keyed by entity, with
progress on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import random
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from stream.config import Settings
from stream.core.events import entity_of
from stream.kafka.client import client_options, start_producer

# name: (share of visitors, conversion multiplier)
CHANNELS = {
    "search": (0.34, 1.0),
    "paid": (0.22, 1.2),
    "social": (0.2, 0.6),
    "email": (0.1, 1.6),
    "direct": (0.14, 1.3),
}
CAMPAIGNS = {  # paid channel: campaign -> keywords
    "winter-sale": ["boots", "winter boots", "warm jacket"],
    "brand": ["funnelshop", "funnel shop"],
    "running": ["running shoes", "trail shoes"],
}
REGIONS = {"north": (0.3, 1.1), "south": (0.3, 0.9), "east": (0.2, 1.0), "west": (0.2, 1.05)}
DEVICES = {"desktop": (0.45, 1.2), "mobile": (0.45, 0.75), "tablet": (0.1, 1.0)}
AGE_BANDS = ["18-24", "25-34", "35-44", "45-54", "55+"]
GENDERS = ["f", "m", "x"]
# Base probability of each shop step given the previous one.
SHOP_STEPS = {"signup": 0.35, "cart": 0.55, "checkout": 0.6, "purchase": 0.75}
# Daily ad budget (EUR) per channel and, for paid, per campaign: the ads.spend feed.
BUDGETS = {
    ("search", None): 400.0,
    ("social", None): 250.0,
    ("email", None): 30.0,
    ("paid", "winter-sale"): 300.0,
    ("paid", "brand"): 120.0,
    ("paid", "running"): 200.0,
}
# What a call's page knew about its visitor; with live leasing the call itself
# carries none of it (the tracking number's lease does).
TOUCH = ("channel", "source", "medium", "campaign", "keyword")
REPEAT_BOOST = 1.5
CALL_SHARE = 0.06  # of visitors who call a tracking number
ANSWERED = 0.8
MANAGERS = {"ann": 1.25, "bob": 1.0, "cem": 0.8, "dan": 1.05}  # closing skill
STAGES = ["lead", "contacted", "qualified", "proposal", "negotiation", "won"]
STAGE_ADVANCE = [0.8, 0.7, 0.6, 0.65, 0.6]  # lead->contacted ... negotiation->won
LOST_REASONS = ["price", "timing", "competitor", "no budget", "no answer"]
EVENTS_PER_VISITOR = 2.3  # measured mean, to turn --rate (events/s) into arrivals


@dataclass(frozen=True)
class Drop:
    """From ``minute`` of the run on, reaching ``step`` is ``factor`` times as likely."""

    step: str
    factor: float
    minute: float

    @classmethod
    def parse(cls, text: str) -> Drop:
        try:
            step, rest = text.split("=", 1)
            factor, minute = rest.split("@", 1) if "@" in rest else (rest, "0")
            drop = cls(step.strip(), float(factor), float(minute))
        except ValueError:
            raise ValueError(
                f"--drop {text!r}: use STEP=FACTOR@MINUTE, e.g. checkout=0.1@5"
            ) from None
        known = set(SHOP_STEPS) | set(STAGES[1:])
        if drop.step not in known:
            raise ValueError(f"--drop {text!r}: step {drop.step!r} is not one of {sorted(known)}")
        if not 0 <= drop.factor <= 10:
            raise ValueError(f"--drop {text!r}: factor must be between 0 and 10")
        return drop


def _pick(rng: random.Random, table: dict[str, tuple[float, float]]) -> tuple[str, float]:
    names = list(table)
    name = rng.choices(names, weights=[table[n][0] for n in names])[0]
    return name, table[name][1]


def rhythm(ts: float, day: float) -> float:
    """Traffic multiplier over the day: quiet at night (0.3), busiest in the evening (1.5)."""
    hour = (ts % day) / day * 24
    return 0.9 + 0.6 * math.sin((hour - 13) / 24 * 2 * math.pi)


@dataclass
class Traffic:
    """Seeded simulation; ``due(now)`` returns the events whose time has come."""

    seed: int = 1
    rate: float = 50.0  # events per second, roughly
    history_rate: float | None = None  # the rate before ``drops_from`` (default: rate)
    start: float = field(default_factory=time.time)
    drops: list[Drop] = field(default_factory=list)
    day: float = 86400.0  # seconds in a simulated day (shorter = faster rhythm)
    speed: float = 1.0  # journeys move this many times faster (delays between steps shrink)
    drops_from: float | None = None  # --drop minutes count from here (default: start)
    # Also yield "_lease" events (a caller's page asks for a tracking number)
    # and mark calls with their "_session", for ``Lessor``.
    leasing: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.queue: list[tuple[float, int, dict[str, Any]]] = []
        self.seq = 0
        self.clock = self.start
        self.customers: list[tuple[str, dict[str, Any]]] = []  # returning buyers
        self.deals = 0
        self.spend_days: set[str] = set()

    # -- scheduling ---------------------------------------------------------

    def _later(self, low: float, high: float) -> float:
        """A delay between two steps of a journey, in seconds."""
        return self.rng.uniform(low, high) / self.speed

    def _at(self, ts: float, event: dict[str, Any]) -> None:
        event["event_id"] = str(uuid.uuid4())  # unique across runs, even with the same seed
        event["occurred_at"] = datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")
        self.seq += 1
        heapq.heappush(self.queue, (ts, self.seq, event))

    def factor(self, step: str, ts: float) -> float:
        out = 1.0
        for drop in self.drops:
            origin = self.start if self.drops_from is None else self.drops_from
            if drop.step == step and ts >= origin + drop.minute * 60:
                out *= drop.factor
        return out

    def due(self, now: float) -> list[dict[str, Any]]:
        """Spawn visitors up to ``now`` and return the events due by then, in time order."""
        while self.clock < now:
            arrivals = self._rate_at(self.clock) / EVENTS_PER_VISITOR
            self._spend(self.clock)
            step = min(1.0, now - self.clock)
            n = self._poisson(arrivals * step * rhythm(self.clock, self.day))
            for _ in range(n):
                self._visitor(self.clock + self.rng.random() * step)
            self.clock += step
        out = []
        while self.queue and self.queue[0][0] <= now:
            out.append(heapq.heappop(self.queue)[2])
        return out

    def _rate_at(self, ts: float) -> float:
        live = self.drops_from is None or ts >= self.drops_from
        return self.rate if live or self.history_rate is None else self.history_rate

    def _poisson(self, lam: float) -> int:
        if lam <= 0:
            return 0
        if lam > 30:  # normal approximation keeps it cheap at high rates
            return max(0, round(self.rng.gauss(lam, math.sqrt(lam))))
        k, p, limit = 0, 1.0, math.exp(-lam)
        while True:
            p *= self.rng.random()
            if p <= limit:
                return k
            k += 1

    def _spend(self, ts: float) -> None:
        """Each day's ad budget, reported once when the day begins (or the run does)."""
        day = datetime.fromtimestamp(ts, tz=UTC).date().isoformat()
        if day in self.spend_days:
            return
        self.spend_days.add(day)
        for (channel, campaign), budget in BUDGETS.items():
            cost = round(budget * self.rng.uniform(0.8, 1.2), 2)
            event = {"type": "spend", "channel": channel, "day": day, "cost": cost}
            event["currency"] = "EUR"
            if campaign:
                event.update(campaign=campaign, source="ads", medium="cpc")
            self._at(ts, event)

    # -- the shop -----------------------------------------------------------

    def _new_visitor(self) -> tuple[str, dict[str, Any]]:
        """A first-time visitor's id and first-touch attribution (``_mult``: its propensity)."""
        rng = self.rng
        visitor = f"v{rng.getrandbits(40):010x}"
        channel, c = _pick(rng, CHANNELS)
        region, r = _pick(rng, REGIONS)
        device, d = _pick(rng, DEVICES)
        attrs = {"channel": channel, "region": region, "device": device, "_mult": c * r * d}
        attrs["age_band"] = rng.choice(AGE_BANDS)
        attrs["gender"] = rng.choice(GENDERS)
        if channel == "paid":
            campaign = rng.choice(list(CAMPAIGNS))
            attrs.update(campaign=campaign, keyword=rng.choice(CAMPAIGNS[campaign]))
            attrs.update(source="ads", medium="cpc")
        return visitor, attrs

    def _visitor(self, ts: float) -> None:
        rng = self.rng
        if self.customers and rng.random() < 0.15:
            visitor, attrs = rng.choice(self.customers)
            boost = REPEAT_BOOST
        else:
            visitor, attrs = self._new_visitor()
            boost = 1.0
        mult = attrs["_mult"] * boost
        base = {k: v for k, v in attrs.items() if not k.startswith("_")}
        session = f"s{rng.getrandbits(40):010x}"
        pages = ["/", "/catalog", "/product/boots", "/product/jacket", "/sale"]
        self._at(
            ts,
            {
                "type": "visit",
                "visitor_id": visitor,
                "session_id": session,
                "url": rng.choice(pages),
                **base,
            },
        )
        if rng.random() < 0.3:  # a second page view in the same session
            self._at(
                ts + self._later(5, 60),
                {
                    "type": "visit",
                    "visitor_id": visitor,
                    "session_id": session,
                    "url": "/catalog",
                    **base,
                },
            )
        if rng.random() < CALL_SHARE * mult:
            if self.leasing:  # the page asks for a tracking number while it is read
                self._at(ts + 0.5, {"type": "_lease", "visitor_id": visitor,
                                    "session_id": session, **base})  # fmt: skip
            self._call(ts + self._later(10, 120), visitor, session, base)
        self._shop_steps(ts, visitor, attrs, base, mult)

    def _shop_steps(
        self, ts: float, visitor: str, attrs: dict[str, Any], base: dict[str, Any], mult: float
    ) -> None:
        """Signup, cart, checkout and purchase, each reached with its probability."""
        rng = self.rng
        t = ts
        for step, p in SHOP_STEPS.items():
            t += self._later(5, 90)
            if rng.random() >= min(0.98, p * mult**0.5 * self.factor(step, t)):
                if step in ("checkout", "purchase") and rng.random() < 0.3:
                    self._at(
                        t,
                        {
                            "type": "cart",
                            "visitor_id": visitor,
                            "action": "remove",
                            "cart_id": f"c-{visitor}",
                            **base,
                        },
                    )
                return
            if step == "signup":
                self._at(
                    t,
                    {
                        "type": "signup",
                        "visitor_id": visitor,
                        "user_id": f"u-{visitor}",
                        "method": rng.choice(["newsletter", "account"]),
                        **base,
                    },
                )
                continue
            event = {
                "type": "cart",
                "visitor_id": visitor,
                "action": "add" if step == "cart" else step,
                "cart_id": f"c-{visitor}",
                **base,
            }
            if step == "purchase":
                event.update(
                    order_id=f"o{rng.getrandbits(32):08x}",
                    value=round(rng.lognormvariate(3.8, 0.6), 2),
                    currency="EUR",
                )
                if len(self.customers) < 5000:
                    self.customers.append((visitor, attrs))
            self._at(t, event)

    # -- calls and the sales pipeline ----------------------------------------

    def _call(self, ts: float, visitor: str, session: str, base: dict[str, Any]) -> None:
        rng = self.rng
        call_id = f"call{rng.getrandbits(40):010x}"
        answered = rng.random() < ANSWERED
        number = f"tn-{base.get('channel', 'direct')}"
        self._at(
            ts,
            {
                "type": "call",
                "call_id": call_id,
                "tracking_number": number,
                "caller_hash": f"h{rng.getrandbits(64):016x}",
                "direction": "inbound",
                "answered": answered,
                "duration_s": rng.randint(30, 600) if answered else 0,
                "visitor_id": visitor,
                "session_id": session,
                **({"_session": session} if self.leasing else {}),
                **base,
            },
        )
        if answered:
            self._deal(ts + self._later(5, 30), visitor, call_id, base)

    def _deal(self, ts: float, visitor: str, call_id: str, base: dict[str, Any]) -> None:
        rng = self.rng
        self.deals += 1
        deal = f"d{self.deals:07d}-{rng.getrandbits(16):04x}"
        manager = rng.choice(list(MANAGERS))
        skill = MANAGERS[manager]
        amount = round(rng.lognormvariate(7, 0.8), 2)
        common = {
            "deal_id": deal,
            "type": "deal_stage",
            "manager": manager,
            "amount": amount,
            "currency": "EUR",
            "visitor_id": visitor,
            "call_id": call_id,
            **{k: v for k, v in base.items() if k != "manager"},
        }
        self._at(ts, {**common, "stage": "lead", "status": "open"})
        if rng.random() < 0.85:  # the manager calls the lead back: lead response time
            answered = rng.random() < 0.8
            callback = {"type": "call", "call_id": f"cb{rng.getrandbits(40):010x}"}
            callback.update(tracking_number="+15555550199", direction="outbound", deal_id=deal)
            callback.update(manager=manager, answered=answered)
            callback["duration_s"] = rng.randint(60, 900) if answered else 0
            self._at(ts + self._later(30, 900) / skill, callback)
        position, t = 0, ts
        while position < len(STAGES) - 1:
            t += self._later(10, 90)
            nxt = STAGES[position + 1]
            p = min(0.97, STAGE_ADVANCE[position] * skill * self.factor(nxt, t))
            if rng.random() >= p:
                reason = rng.choice(LOST_REASONS)
                self._at(
                    t,
                    {**common, "stage": STAGES[position], "status": "lost", "lost_reason": reason},
                )
                return
            if nxt == "won":
                self._at(
                    t,
                    {**common, "stage": "won", "status": "won", "previous_stage": STAGES[position]},
                )
                return
            target = position + 1
            if target + 1 < len(STAGES) - 1 and rng.random() < 0.1:
                target += 1  # a stage skipped in the CRM
            self._at(
                t,
                {
                    **common,
                    "stage": STAGES[target],
                    "status": "open",
                    "previous_stage": STAGES[position],
                },
            )
            if target > 1 and rng.random() < 0.05:  # moved back a stage, then on again
                t += self._later(10, 60)
                self._at(
                    t,
                    {
                        **common,
                        "stage": STAGES[target - 1],
                        "status": "open",
                        "previous_stage": STAGES[target],
                    },
                )
            position = target


async def _send(producer: Any, settings: Settings, event: dict, copy: Any) -> str:
    """One event to its input topic, keyed by entity (and to the copy file); its type."""
    from stream.core.events import decode

    event = {k: v for k, v in event.items() if not k.startswith("_")}
    value = orjson.dumps(event)
    kind = event["type"]
    key = entity_of(decode(value, now=float("inf"))).encode()
    await producer.send(settings.topics[kind], value, key=key)
    if copy is not None:
        copy.write(value + b"\n")
    return kind


def _lease_report(lessor: Any) -> None:
    print(
        f"\ndemo: {lessor.leased} tracking numbers leased, {lessor.failed} lease requests "
        f"failed, {len(lessor.calls)} calls made to leased numbers",
        file=sys.stderr,
    )


async def produce(
    settings: Settings,
    rate: float,
    duration: float,
    seed: int,
    drops: list[Drop] | None = None,
    day: float = 86400.0,
    out: str | None = None,
    speed: float = 1.0,
    history: float = 0.0,
    leases: str | None = None,
    history_rate: float | None = None,
) -> int:
    """Send the simulation's events as they fall due; progress on stderr.

    With ``out``, every event sent is also appended to that file (JSON lines),
    so the same traffic can be replayed offline with `funnel replay`. With
    ``history`` (minutes), the traffic of that many minutes before now is sent
    first, in time order, so trends and baselines have data from the start
    (at ``history_rate`` events/s if given: a day at the live rate is millions);
    --drop minutes still count from the start of the live traffic.

    With ``leases`` (the worker's /api/tracking-numbers URL), live callers'
    pages lease a tracking number first and their calls (and the deals made
    from them) carry only that number: the worker attributes them from Redis.
    Without it, or when the worker does not answer, calls carry their
    attribution themselves.
    """
    from aiokafka import AIOKafkaProducer

    now = time.time()
    traffic = Traffic(
        seed=seed,
        rate=rate,
        history_rate=history_rate,
        drops=drops or [],
        day=day,
        speed=speed,
        start=now - history * 60,
        drops_from=now,
        leasing=bool(leases),
    )
    live_from = datetime.fromtimestamp(now, tz=UTC).isoformat(timespec="milliseconds")
    producer = AIOKafkaProducer(**client_options(settings), linger_ms=5, enable_idempotence=True)
    await start_producer(settings, producer)
    copy = open(out, "ab") if out else None  # noqa: SIM115 - closed in finally
    lessor = Lessor(leases, settings.api_token) if leases else None
    sent: dict[str, int] = {}
    started = time.monotonic()
    last_report = 0.0
    try:
        while duration <= 0 or time.monotonic() - started < duration:
            for event in traffic.due(time.time()):
                if lessor is not None:
                    event = await lessor.apply(event, live=event["occurred_at"] >= live_from)
                if event is None or event["type"] == "_lease":
                    continue
                kind = await _send(producer, settings, event, copy)
                sent[kind] = sent.get(kind, 0) + 1
            if time.monotonic() - last_report > 2:
                last_report = time.monotonic()
                _progress(sent, time.monotonic() - started, traffic, end="")
            await asyncio.sleep(0.05)
        await producer.flush()
    finally:
        await producer.stop()
        if lessor is not None:
            await lessor.close()
            _lease_report(lessor)
        if copy is not None:
            copy.close()
        _progress(sent, time.monotonic() - started, traffic, end="\n")
    return sum(sent.values())


# Every simulated visitor leases from 127.0.0.1; this header names its own
# address, as a reverse proxy would (the worker reads it with
# FUNNEL_CLIENT_ADDRESS_HEADER, which `make run` sets), so the per-client lease
# limit sees visitors, not the demo.
DEMO_ADDRESS_HEADER = "X-Forwarded-For"


def visitor_address(visitor_id: str) -> str:
    """A stable made-up address per visitor, in 198.51.0.0/16."""
    n = zlib.crc32(visitor_id.encode())
    return f"198.51.{n % 100}.{n // 100 % 254 + 1}"


class Lessor:
    """Leases tracking numbers from the worker for live callers (dynamic number insertion)."""

    def __init__(self, url: str, token: str = "") -> None:
        import aiohttp

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self.http = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=2))
        self.numbers: dict[str, str] = {}  # session -> leased number
        self.calls: set[str] = set()  # calls made to a leased number
        self.leased = self.failed = 0

    async def apply(self, event: dict[str, Any], live: bool) -> dict[str, Any] | None:
        kind = event["type"]
        if kind == "_lease" and live:
            body = {k: v for k, v in event.items() if k in (*TOUCH, "visitor_id", "session_id")}
            address = {DEMO_ADDRESS_HEADER: visitor_address(event["visitor_id"])}
            try:
                async with self.http.post(self.url, json=body, headers=address) as resp:
                    if resp.status == 200:
                        self.numbers[event["session_id"]] = (await resp.json())["number"]
                        self.leased += 1
                    else:
                        self.failed += 1
            except Exception:  # noqa: BLE001 - the worker is optional for the demo
                self.failed += 1
            return None
        if kind == "call" and event.get("_session") in self.numbers:
            number = self.numbers.pop(event["_session"])
            strip = (*TOUCH, "visitor_id", "session_id")
            self.calls.add(event["call_id"])
            return {**{k: v for k, v in event.items() if k not in strip}, "tracking_number": number}
        if kind == "deal_stage" and event.get("call_id") in self.calls:
            return {k: v for k, v in event.items() if k not in TOUCH}
        return event

    async def close(self) -> None:
        await self.http.close()


def _progress(sent: dict[str, int], elapsed: float, traffic: Traffic, end: str) -> None:
    counts = " ".join(f"{k}={n}" for k, n in sorted(sent.items()))
    active = [f"{d.step}x{d.factor:g}" for d in traffic.drops if elapsed >= d.minute * 60]
    drops = f"  drops active: {', '.join(active)}" if active else ""
    print(
        f"\rdemo {elapsed:6.0f}s  {sum(sent.values())} events ({counts}){drops}",
        end=end,
        file=sys.stderr,
        flush=True,
    )


def run_demo(settings: Settings, **options: Any) -> int:
    """`funnel demo`: ``produce`` until the duration ends or Ctrl-C."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(produce(settings, **options))
    return 0
