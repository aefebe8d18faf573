"""`funnel run`: the whole thing on one machine for a person to look at.

Starts the local stack, one worker and the demo producer, prints where to look,
and on Ctrl-C stops the worker and the demo (the stack stays up for the next
run; `funnel stack down` stops it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from stream.config import Settings
from stream.ops.stack import Stack, StackError, log_tail
from stream.tools.demo import DEMO_ADDRESS_HEADER


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    """SIGTERM (e.g. from a supervisor) stops the worker and demo as Ctrl-C does."""
    raise KeyboardInterrupt


# The sample shop's link in `make run`: an ad click, so a newcomer's own visit
# shows under a campaign of its own on the live page.
SHOP_CLICK = "utm_source=google&utm_medium=cpc&utm_campaign=try-me&utm_term=winter+boots"
HISTORY_MINUTES = 24 * 60
HISTORY_RATE = 2.0  # events per second of the day of history (about 170,000 events)
START_S = 90.0  # how long a starting worker may take to answer HTTP at all
NOTE_EVERY_S = 10.0


def readiness(web: str) -> tuple[int | None, str]:
    """The worker's /health/ready: (HTTP status, its phase); (None, "") if it does not answer."""
    try:
        with urllib.request.urlopen(web + "/health/ready", timeout=2) as resp:
            return resp.status, "ready"
    except urllib.error.HTTPError as exc:  # 503 while recovering, rebalancing, joining
        try:
            return exc.code, str(json.loads(exc.read()).get("state", ""))
        except ValueError:
            return exc.code, ""
    except OSError:
        return None, ""


def wait_until_ready(web: str, worker: subprocess.Popen, start_s: float = START_S) -> bool:
    """Whether the worker became ready. One that does not answer within ``start_s``
    did not start; one that answers "not ready" (rebuilding its tables from their
    changelogs: the more history the stack holds, the longer) is waited for as
    long as it lives, with its phase every ``NOTE_EVERY_S`` seconds."""
    started = last_note = time.monotonic()
    answered = False
    while True:
        status, phase = readiness(web)
        if status == 200:
            return True
        now = time.monotonic()
        answered = answered or status is not None
        if worker.poll() is not None or (not answered and now - started > start_s):
            return False
        if answered and now - last_note >= NOTE_EVERY_S:
            print(f"worker {phase or 'starting'}: {now - started:.0f}s", flush=True)
            last_note = now
        time.sleep(0.5)


def run_all(settings: Settings, rate: float) -> int:
    stack = Stack(settings)
    try:
        stack.up()
    except StackError as exc:
        print(f"funnel run: {exc}", file=sys.stderr)
        return 1
    stack.write_scrape_targets([settings.web_port])
    worker_log = settings.run_dir / "worker.log"
    base = [sys.executable, "-m", "stream"]
    # The demo's visitors all lease from 127.0.0.1: it names each one's simulated
    # address in this header, as a reverse proxy would (per-client lease limits).
    env = {**os.environ, "FUNNEL_CLIENT_ADDRESS_HEADER": DEMO_ADDRESS_HEADER}
    with worker_log.open("ab") as log:
        worker = subprocess.Popen([*base, "worker"], stdout=log, stderr=subprocess.STDOUT, env=env)
    collector_log = settings.run_dir / "collector.log"
    with collector_log.open("ab") as log:
        collector = subprocess.Popen(
            [*base, "collector"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**env, "FUNNEL_COLLECTOR_SHOP": "1"},
        )
    web = f"http://{settings.host}:{settings.web_port}"
    if not wait_until_ready(web, worker):
        print(f"funnel run: worker did not start; {worker_log}:\n{log_tail(worker_log)}")
        worker.kill()
        collector.kill()
        return 1
    collect = f"http://{settings.collector_bind}:{settings.collector_port}"
    print(
        f"\nworker      {web}  (live page)\n"
        f"sample shop {collect}/shop/index.html?{SHOP_CLICK}\n"
        f"            (an ad click: your visit counts under campaign `try-me` on the live page)\n"
        f"collector   {collect}/v1/batch, {collect}/t.js, log {collector_log}\n"
        f"metrics     {web}/metrics\n"
        f"prometheus  http://{settings.host}:{settings.prometheus_port}\n"
        f"alerts      http://{settings.host}:{settings.alertmanager_port}\n"
        f"worker log  {worker_log}\n"
        "Ctrl-C stops the worker and the demo; `make stack-down` stops the stack.\n",
        flush=True,
    )
    leases = f"{web}/api/tracking-numbers"
    # A day of history first (at a lower rate: the worker imports it in a minute
    # or two), so the page, the trend and the dashboards show a full day at once.
    history = ["--history", str(HISTORY_MINUTES), "--history-rate", str(HISTORY_RATE)]
    demo = subprocess.Popen([*base, "demo", "--rate", str(rate), *history, "--leases", leases])
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    try:
        while worker.poll() is None and demo.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (demo, worker, collector):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if proc is demo else signal.SIGTERM)
        for proc in (demo, worker, collector):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    if worker.returncode not in (0, -signal.SIGTERM, None):
        print(f"worker exited with {worker.returncode}; {worker_log}:\n{log_tail(worker_log)}")
        return 1
    return 0
