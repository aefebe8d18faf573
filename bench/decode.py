"""Decode + validate throughput: candidate decoders vs plain json.loads, same payloads.

    python -m bench.decode [--events 200000] [--repeat 5]

Each candidate runs over the same list of realistic messages (all five types,
attribution fields, ~250-400 bytes) several times, interleaved, and the best
run counts. Figures are events/s and the ratio to json.loads (parse only, no
validation), measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from bench.common import attribution, write_result
from stream.core.events import _decoder as _msgspec_decoder
from stream.core.events import decode

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
NOW = time.time()


def messages(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW - 600)) + ".123+00:00"
    out = []
    for i in range(n):
        common = {
            "event_id": f"{rng.getrandbits(64):016x}-{i}",
            "occurred_at": stamp,
            **attribution(rng),
        }
        kind = rng.choices(["visit", "signup", "cart", "call", "deal_stage"], [50, 10, 25, 7, 8])[0]
        if kind == "visit":
            ev = {"type": kind, "visitor_id": f"v{i}", "session_id": f"s{i}", "url": "/p/1"}
        elif kind == "signup":
            ev = {"type": kind, "visitor_id": f"v{i}", "user_id": f"u{i}", "method": "account"}
        elif kind == "cart":
            ev = {
                "type": kind,
                "visitor_id": f"v{i}",
                "action": "add",
                "value": 19.9,
                "currency": "EUR",
                "cart_id": f"c{i}",
            }
        elif kind == "call":
            ev = {
                "type": kind,
                "call_id": f"c{i}",
                "tracking_number": "tn-1",
                "caller_hash": "h",
                "duration_s": 30,
                "answered": True,
            }
        else:
            ev = {
                "type": kind,
                "deal_id": f"d{i}",
                "stage": "proposal",
                "amount": 1000,
                "currency": "USD",
                "manager": "m1",
            }
        out.append(orjson.dumps({**common, **ev}))
    return out


def candidates() -> dict[str, Callable[[bytes], object]]:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schemas = {
        p.name.split(".")[0]: json.loads(p.read_text()) for p in SCHEMAS.glob("*.schema.json")
    }
    registry = Registry().with_resources(
        [(s["$id"], Resource.from_contents(s)) for s in schemas.values()]
    )
    js = {t: Draft202012Validator(s, registry=registry) for t, s in schemas.items()}

    def orjson_jsonschema(raw: bytes) -> object:
        doc = orjson.loads(raw)
        js[doc["type"]].validate(doc)
        return doc

    out: dict[str, Callable[[bytes], object]] = {
        "json.loads (parse only, baseline)": json.loads,
        "orjson.loads (parse only)": orjson.loads,
        "msgspec + section-3 rules (stream.core.events.decode)": lambda raw: decode(raw, now=NOW),
        "msgspec typed decode only (no time/topic rules)": _msgspec_decoder.decode,
        "orjson + jsonschema (validate)": orjson_jsonschema,
    }
    try:
        import fastjsonschema

        envelope = schemas["envelope"]
        compiled = {}
        for t, s in schemas.items():
            if t == "envelope":
                continue
            flat = dict(s)
            flat["allOf"] = [envelope]  # fastjsonschema resolves no remote $ref
            compiled[t] = fastjsonschema.compile(flat)

        def orjson_fastjsonschema(raw: bytes) -> object:
            doc = orjson.loads(raw)
            return compiled[doc["type"]](doc)

        out["orjson + fastjsonschema (compiled validator)"] = orjson_fastjsonschema
    except ImportError:
        print("fastjsonschema not installed; skipping that candidate", file=sys.stderr)
    return out


def run(n: int, repeat: int) -> dict:
    payloads = messages(n)
    cands = candidates()
    best = dict.fromkeys(cands, float("inf"))
    for r in range(repeat):
        for name, fn in cands.items():
            started = time.perf_counter()
            for raw in payloads:
                fn(raw)
            best[name] = min(best[name], time.perf_counter() - started)
        print(f"round {r + 1}/{repeat} done", file=sys.stderr, flush=True)
    base = best["json.loads (parse only, baseline)"]
    rows = {
        name: {"events_per_s": round(n / t), "ratio_vs_json_loads": round(base / t, 3)}
        for name, t in best.items()
    }
    avg = sum(map(len, payloads)) / n
    return {"events": n, "repeat": repeat, "avg_bytes": round(avg), "candidates": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    figures = run(args.events, args.repeat)
    path = write_result("decode", figures)
    print(f"\n{'candidate':<52} {'events/s':>12} {'x json.loads':>13}")
    for name, row in figures["candidates"].items():
        print(f"{name:<52} {row['events_per_s']:>12,} {row['ratio_vs_json_loads']:>13.2f}")
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
