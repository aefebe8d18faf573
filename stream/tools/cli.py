"""The `funnel` command: one entry point for the stack, the worker and the tools."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from stream.config import Settings

COMPONENTS = ["kafka", "redis", "prometheus", "alertmanager"]


def cmd_stack(args: argparse.Namespace) -> int:
    from stream.ops.stack import Stack, StackError

    unknown = set(args.components) - set(COMPONENTS)
    if unknown:
        print(f"funnel stack: unknown component(s) {sorted(unknown)}; known: {COMPONENTS}")
        return 2
    stack = Stack(Settings.from_env())
    names = args.components or None
    try:
        if args.action == "fetch":
            print(f"Kafka jars in {stack.fetch_kafka_jars()}")
        elif args.action == "up":
            stack.up(names)
        elif args.action == "down":
            stack.down(names, purge=args.purge)
        else:
            report = stack.status()
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                for name, st in report.items():
                    state = "healthy" if st["healthy"] else "running" if st["running"] else "down"
                    pid = st["pid"] or "-"
                    print(f"{name:<12} {state:<8} {st['address']:<18} pid {pid:<8} log {st['log']}")
            return 0 if all(st["healthy"] for st in report.values()) else 1
    except StackError as exc:
        print(f"funnel stack {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    import asyncio

    from stream.ops.stack import Stack

    stack = Stack(Settings.from_env())
    created = asyncio.run(stack.create_topics())
    print(f"created: {', '.join(created) or 'none (all exist)'}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from stream.worker.app import run_worker

    return run_worker(Settings.from_env(), web_port=args.web_port)


def cmd_collector(args: argparse.Namespace) -> int:
    from stream.collector.app import run_collector

    return run_collector(Settings.from_env())


def cmd_demo(args: argparse.Namespace) -> int:
    from stream.tools.demo import Drop, run_demo

    try:
        drops = [Drop.parse(text) for text in args.drop]
    except ValueError as exc:
        print(f"funnel demo: {exc}", file=sys.stderr)
        return 2
    return run_demo(
        Settings.from_env(),
        rate=args.rate,
        duration=args.duration,
        seed=args.seed,
        drops=drops,
        day=args.day,
        out=args.out,
        speed=args.speed,
        history=args.history,
        history_rate=args.history_rate,
        leases=args.leases,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from stream.tools.runner import run_all

    return run_all(Settings.from_env(), rate=args.rate)


def cmd_validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stream.core.events import Rejection
    from stream.tools.files import read_events

    valid = invalid = 0
    for lineno, _, result in read_events(Path(args.file)):
        if isinstance(result, Rejection):
            invalid += 1
            print(f"{lineno}: {result.reason}: {result.message}")
        else:
            valid += 1
    print(f"{valid} valid, {invalid} invalid")
    return 1 if invalid else 0


def unreadable(path: Any) -> str | None:
    """Why an events file cannot be read, or None."""
    if not path.exists():
        return "no such file"
    if not path.is_file():
        return "not a file"
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return None


def cmd_produce(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from stream.core.events import Rejection, entity_of
    from stream.kafka.producer import FunnelProducer
    from stream.tools.files import read_events

    settings = Settings.from_env()
    problem = unreadable(Path(args.file))
    if problem:  # before connecting: a wrong path is not a Kafka problem
        print(f"funnel produce: {args.file}: {problem}", file=sys.stderr)
        return 2

    async def send_file() -> tuple[int, int]:
        sent = invalid = 0
        pending = []
        async with FunnelProducer(settings) as producer:
            for lineno, raw, result in read_events(Path(args.file), progress=True):
                if isinstance(result, Rejection):
                    invalid += 1
                    print(
                        f"{args.file}:{lineno}: {result.reason}: {result.message}", file=sys.stderr
                    )
                    continue
                topic = settings.topics[result.type]
                pending.append(await producer.send_raw(topic, entity_of(result).encode(), raw))
                sent += 1
                if len(pending) >= 10000:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
        return sent, invalid

    sent, invalid = asyncio.run(send_file())
    print(f"{sent} sent, {invalid} invalid (not sent)", file=sys.stderr)
    return 1 if invalid else 0


def _replay_file(args: argparse.Namespace, command: str, **query: Any) -> dict | None:
    """Run the engine over ``args.file`` with ``args.funnels``; None after printing why not."""
    from pathlib import Path

    from stream.core.events import Rejection
    from stream.core.funnels import FunnelConfigError, load_funnels
    from stream.tools.replay import replay

    settings = Settings.from_env()
    try:
        funnels = load_funnels(args.funnels or settings.funnels or None)
    except FunnelConfigError as exc:
        print(f"funnel {command}: {exc}", file=sys.stderr)
        return None
    breakdown = query.get("breakdown")
    if breakdown and not any(breakdown in f.breakdowns for f in funnels):
        print(
            f"funnel {command}: --breakdown {breakdown!r} is no funnel's breakdown", file=sys.stderr
        )
        return None
    try:
        return replay(
            Path(args.file),
            funnels,
            bucket=settings.bucket,
            lateness=settings.lateness,
            horizon=settings.dedup_horizon,
            **query,
        )
    except Rejection as exc:
        print(f"funnel {command}: {exc.message}", file=sys.stderr)
        return None


def cmd_replay(args: argparse.Namespace) -> int:
    import orjson

    doc = _replay_file(
        args, "replay", start=args.start, end=args.end, view=args.view, breakdown=args.breakdown
    )
    if doc is None:
        return 2
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Steps of a funnel as a table, from a running worker's API or from a file."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    from stream.core.report import render

    settings = Settings.from_env()
    if args.file:
        doc = _replay_file(args, "report", view=args.view)
        if doc is None:
            return 2
        docs = [d for d in doc["funnels"] if args.funnel in (None, d["funnel"])]
        if not docs:
            print(f"funnel report: no funnel named {args.funnel!r}", file=sys.stderr)
            return 2
    else:
        base = args.url or f"http://{settings.host}:{settings.web_port}"
        query = urllib.parse.urlencode({"window": args.window, "view": args.view, "flags": "1"})
        names = [args.funnel] if args.funnel else None
        docs = []
        try:
            if names is None:
                with urllib.request.urlopen(f"{base}/api/funnels", timeout=10) as resp:
                    names = [f["name"] for f in json.load(resp)["funnels"]]
            for name in names:
                url = f"{base}/api/funnels/{urllib.parse.quote(name)}?{query}"
                with urllib.request.urlopen(url, timeout=10) as resp:
                    docs.append(json.load(resp))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            print(f"funnel report: {exc.url} answered {exc.code}: {detail}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(
                f"funnel report: no worker answers at {base} ({exc}); start one with "
                "`make run` or `funnel worker`, or report from a file with --file",
                file=sys.stderr,
            )
            return 2
    color = sys.stdout.isatty()
    print("\n\n".join(render(d, color) for d in docs))
    if args.svg:
        from pathlib import Path

        from stream.core.chart import funnel_svg

        target = Path(args.svg)
        for d in docs:
            path = target if len(docs) == 1 else target.with_stem(f"{target.stem}-{d['funnel']}")
            path.write_text(funnel_svg(d), encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    from stream.ops.rules import render_rules

    sys.stdout.write(render_rules(Settings.from_env(), kubernetes=args.kubernetes))
    return 0


def cmd_grafana(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stream.ops.grafana import write_all

    for path in write_all(Path(args.out), Settings.from_env()):
        print(path)
    return 0


def cmd_config(_: argparse.Namespace) -> int:
    for key, value in Settings.from_env().describe().items():
        print(f"{key} = {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="funnel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_stack_commands(sub)
    _add_demo_command(sub)
    _add_file_commands(sub)
    _add_generator_commands(sub)
    return parser


def _add_stack_commands(sub: Any) -> None:
    """stack, topics, worker, run: the local stack and the processes on it."""
    stack = sub.add_parser("stack", help="start, check or stop the local Kafka/Redis/Prometheus")
    stack.add_argument("action", choices=["up", "down", "status", "fetch"])
    stack.add_argument("components", nargs="*", default=[], help=" ".join(COMPONENTS))
    stack.add_argument("--json", action="store_true", help="status as JSON")
    stack.add_argument("--purge", action="store_true", help="with down: also delete data and logs")
    stack.set_defaults(func=cmd_stack)

    topics = sub.add_parser("topics", help="create the input and dead-letter topics if missing")
    topics.add_argument("action", choices=["create"])
    topics.set_defaults(func=cmd_topics)

    worker = sub.add_parser("worker", help="run a Faust worker (web on FUNNEL_WEB_PORT)")
    worker.add_argument("--web-port", type=int, default=None)
    worker.set_defaults(func=cmd_worker)

    collector = sub.add_parser(
        "collector", help="run the HTTP collector: /v1/batch, /t.js, webhooks (port 6070)"
    )
    collector.set_defaults(func=cmd_collector)

    run = sub.add_parser("run", help="stack up, worker, demo traffic (what `make run` does)")
    run.add_argument("--rate", type=float, default=50.0, help="demo events per second")
    run.set_defaults(func=cmd_run)


def _add_demo_command(sub: Any) -> None:
    demo = sub.add_parser("demo", help="send demo traffic to the input topics")
    demo.add_argument("--rate", type=float, default=50.0, help="events per second")
    demo.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until Ctrl-C")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="STEP=FACTOR@MINUTE",
        help="from MINUTE on, reaching STEP is FACTOR times as likely (e.g. checkout=0.1@5)",
    )
    demo.add_argument("--out", help="also append every event sent to this JSONL file")
    demo.add_argument(
        "--speed", type=float, default=1.0, help="journeys move this many times faster"
    )
    demo.add_argument(
        "--day", type=float, default=86400.0, help="seconds of a simulated day (daily rhythm)"
    )
    demo.add_argument(
        "--history",
        type=float,
        default=0.0,
        metavar="MINUTES",
        help="first send the traffic of the last MINUTES (trends and baselines start filled)",
    )
    demo.add_argument(
        "--history-rate",
        type=float,
        default=None,
        metavar="RATE",
        help="events per second of the history (default --rate)",
    )
    demo.add_argument(
        "--leases",
        metavar="URL",
        help="lease tracking numbers for live callers from this worker endpoint "
        "(e.g. http://127.0.0.1:6066/api/tracking-numbers); calls then carry only the number",
    )
    demo.set_defaults(func=cmd_demo)


def _add_file_commands(sub: Any) -> None:
    """validate, produce, replay, report: events files and reports."""
    validate = sub.add_parser("validate", help="check an events file (JSONL) offline")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_validate)

    produce = sub.add_parser("produce", help="send an events file (JSONL) to the input topics")
    produce.add_argument("file")
    produce.set_defaults(func=cmd_produce)

    rep = sub.add_parser("replay", help="run the funnel engine offline over an events file")
    rep.add_argument("file")
    rep.add_argument("--funnels", help="funnels TOML (default: FUNNEL_FUNNELS or built-in)")
    rep.add_argument("--from", dest="start", help="RFC 3339 start of the range (event time)")
    rep.add_argument("--to", dest="end", help="RFC 3339 end of the range (exclusive)")
    rep.add_argument("--view", choices=["period", "cohort"], default="period")
    rep.add_argument("--breakdown", help="add a breakdown by this dimension")
    rep.set_defaults(func=cmd_replay)

    report = sub.add_parser("report", help="a funnel's steps as a table in the terminal")
    report.add_argument("--funnel", help="one funnel (default: all)")
    report.add_argument("--window", default="1h", help="5m, 1h, 24h or all (API only)")
    report.add_argument("--view", choices=["period", "cohort"], default="period")
    report.add_argument("--url", help="worker base URL (default: FUNNEL_HOST:FUNNEL_WEB_PORT)")
    report.add_argument("--file", help="report from an events file (JSONL) instead of a worker")
    report.add_argument("--funnels", help="with --file: funnels TOML")
    report.add_argument(
        "--svg", metavar="FILE", help="also draw the funnel as SVG (one file per funnel)"
    )
    report.set_defaults(func=cmd_report)


def _add_generator_commands(sub: Any) -> None:
    """rules, grafana, config: what the settings generate."""
    rules = sub.add_parser("rules", help="print Prometheus rules for the FUNNEL_ALERT_* settings")
    rules.add_argument(
        "--kubernetes", action="store_true", help="as a Prometheus Operator PrometheusRule"
    )
    rules.set_defaults(func=cmd_rules)

    grafana = sub.add_parser("grafana", help="write the Grafana dashboards and alert rules")
    grafana.add_argument(
        "--out", default="deploy/grafana", help="directory (default deploy/grafana)"
    )
    grafana.set_defaults(func=cmd_grafana)

    config = sub.add_parser("config", help="print the settings in effect")
    config.set_defaults(func=cmd_config)


def main(argv: list[str] | None = None) -> int:
    from aiokafka.errors import KafkaError

    from stream.kafka.client import MissingTopics

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MissingTopics as exc:
        print(f"funnel {args.command}: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:
        # One line that says where and how it tried, not a traceback.
        s = Settings.from_env()
        how = s.kafka_security_protocol
        if how.startswith("SASL"):
            how += f" {s.kafka_sasl_mechanism} as {s.kafka_sasl_username!r}"
        print(
            f"funnel {args.command}: Kafka at {s.kafka_bootstrap} ({how}) failed: {exc}; "
            "check FUNNEL_KAFKA_BOOTSTRAP and the FUNNEL_KAFKA_SECURITY_PROTOCOL/SASL settings",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
