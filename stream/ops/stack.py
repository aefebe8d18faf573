"""The local stack: Kafka (KRaft, Maven jars), Redis, Prometheus, Alertmanager.

Each component is a real process started from this machine's binaries, bound
to 127.0.0.1, with its pid file, log and data under the run directory.
``up`` is idempotent (a healthy component is left alone), a port held by a
foreign process is a clear error, and a component that dies or never gets
healthy fails with the tail of its log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stream.config import REPO_ROOT, Settings
from stream.kafka.client import client_options, create_topics
from stream.net import port_open

DEPLOY = REPO_ROOT / "deploy"


class StackError(RuntimeError):
    """A component could not be started, with the reason and its log tail."""


@dataclass
class Component:
    name: str
    port: int
    command: Callable[[], list[str]]
    healthy: Callable[[], bool]
    prepare: Callable[[], None] = lambda: None
    start_timeout: float = 60.0


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(text)


def port_owner(port: int) -> str:
    """Best effort description of who listens on a port, for error messages."""
    ss = shutil.which("ss")
    if not ss:
        return "unknown process"
    out = subprocess.run(
        [ss, "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return out.split("users:")[-1] if "users:" in out else (out or "unknown process")


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except OSError:
        return False


def new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def write_log4j(kdir: Path) -> None:
    """A broker's log4j.properties in its directory (logs to files there)."""
    log4j = DEPLOY / "local" / "kafka" / "log4j.properties"
    (kdir / "log4j.properties").write_text(
        string.Template(log4j.read_text()).substitute(log_dir=kdir)
    )


def format_storage(lib: Path, kdir: Path, cluster_id: str) -> None:
    """Format the KRaft storage of the broker whose server.properties is in ``kdir``."""
    result = subprocess.run(
        [
            "java",
            "-cp",
            f"{lib}/*",
            f"-Dlog4j.configuration=file:{kdir / 'log4j.properties'}",
            "kafka.tools.StorageTool",
            "format",
            # `=` form: a random id may start with "-", which argparse
            # would read as an option.
            f"--cluster-id={cluster_id}",
            f"--config={kdir / 'server.properties'}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"kafka storage format failed:\n{result.stdout}{result.stderr}")


def broker_command(lib: Path, kdir: Path, heap: str) -> list[str]:
    """The java command of the broker whose files are in ``kdir``."""
    return [
        "java",
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={kdir}",
        f"-Dlog4j.configuration=file:{kdir / 'log4j.properties'}",
        "-cp",
        f"{lib}/*",
        "kafka.Kafka",
        str(kdir / "server.properties"),
    ]


class Stack:
    """Starts, checks and stops the local components for one set of settings."""

    def __init__(self, settings: Settings, out=None) -> None:
        self.s = settings
        self.out = out or sys.stdout
        self.run = settings.run_dir
        self.components = {
            c.name: c
            for c in (
                Component(
                    "kafka",
                    settings.kafka_port,
                    self._kafka_command,
                    self._kafka_healthy,
                    self._kafka_prepare,
                    start_timeout=90.0,
                ),
                Component("redis", settings.redis_port, self._redis_command, self._redis_healthy),
                Component(
                    "prometheus",
                    settings.prometheus_port,
                    self._prometheus_command,
                    lambda: http_ok(f"http://{self.s.host}:{self.s.prometheus_port}/-/ready"),
                    self._prometheus_prepare,
                ),
                Component(
                    "alertmanager",
                    settings.alertmanager_port,
                    self._alertmanager_command,
                    lambda: http_ok(f"http://{self.s.host}:{self.s.alertmanager_port}/-/ready"),
                    self._alertmanager_prepare,
                ),
            )
        }

    # ---- generic process handling -------------------------------------------------

    def _dir(self, name: str) -> Path:
        path = self.run / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def pid_file(self, name: str) -> Path:
        return self._dir(name) / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self._dir(name) / f"{name}.log"

    def pid(self, name: str) -> int | None:
        path = self.pid_file(name)
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        # A zombie of ours still answers kill(0); treat it as gone.
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
            if state == "Z":
                return None
        except OSError:
            pass
        return pid

    def say(self, msg: str) -> None:
        print(msg, file=self.out, flush=True)

    def start(self, name: str) -> None:
        comp = self.components[name]
        pid = self.pid(name)
        if pid is not None and comp.healthy():
            self.say(f"{name:<12} already running (pid {pid}, {self.s.host}:{comp.port})")
            return
        if pid is not None:
            # Ours but not healthy yet (e.g. a start was interrupted): wait for it.
            self._wait_healthy(comp, pid, time.monotonic())
            return
        if port_open(self.s.host, comp.port):
            raise StackError(
                f"{name}: port {self.s.host}:{comp.port} is already in use by "
                f"{port_owner(comp.port)}; stop that process or set another port "
                f"(FUNNEL_{name.upper()}_PORT)"
            )
        comp.prepare()
        log = self.log_file(name)
        started = time.monotonic()
        with log.open("ab") as fh:
            proc = subprocess.Popen(
                comp.command(),
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self._dir(name),
                start_new_session=True,
            )
        self.pid_file(name).write_text(str(proc.pid))
        self._wait_healthy(comp, proc.pid, started, proc)

    def _wait_healthy(
        self, comp: Component, pid: int, started: float, proc: subprocess.Popen | None = None
    ) -> None:
        deadline = started + comp.start_timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise StackError(
                    f"{comp.name} exited with code {proc.returncode} while starting; "
                    f"log {self.log_file(comp.name)}:\n{log_tail(self.log_file(comp.name))}"
                )
            if proc is None and self.pid(comp.name) is None:
                raise StackError(f"{comp.name} (pid {pid}) died while starting")
            if comp.healthy():
                took = time.monotonic() - started
                self.say(
                    f"{comp.name:<12} up on {self.s.host}:{comp.port} (pid {pid}, {took:.1f}s)"
                )
                return
            time.sleep(0.2)
        raise StackError(
            f"{comp.name} not healthy after {comp.start_timeout:.0f}s; "
            f"log {self.log_file(comp.name)}:\n{log_tail(self.log_file(comp.name))}"
        )

    def stop(self, name: str, timeout: float = 20.0) -> None:
        pid = self.pid(name)
        if pid is None:
            self.say(f"{name:<12} not running")
            self.pid_file(name).unlink(missing_ok=True)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid(name) is not None:
            self._reap(pid)
            time.sleep(0.1)
        if self.pid(name) is not None:
            os.killpg(pid, signal.SIGKILL)
            self._reap(pid)
        self.pid_file(name).unlink(missing_ok=True)
        self.say(f"{name:<12} stopped (pid {pid})")

    @staticmethod
    def _reap(pid: int) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)

    def up(self, names: list[str] | None = None) -> None:
        for name in names or list(self.components):
            self.start(name)
        if names is None or "kafka" in names:
            created = asyncio.run(self.create_topics())
            if created:
                self.say(f"{'topics':<12} created {', '.join(sorted(created))}")

    def down(self, names: list[str] | None = None, purge: bool = False) -> None:
        for name in reversed(names or list(self.components)):
            self.stop(name)
            if purge:
                shutil.rmtree(self.run / name, ignore_errors=True)
                self.say(f"{name:<12} data removed")

    def status(self) -> dict[str, dict[str, object]]:
        report: dict[str, dict[str, object]] = {}
        for name, comp in self.components.items():
            pid = self.pid(name)
            report[name] = {
                "running": pid is not None,
                "healthy": pid is not None and comp.healthy(),
                "pid": pid,
                "address": f"{self.s.host}:{comp.port}",
                "log": str(self.log_file(name)),
            }
        return report

    # ---- Kafka ------------------------------------------------------------------

    def fetch_kafka_jars(self) -> Path:
        """Maven fetch of the broker jars, once; later starts reuse the cache."""
        lib = self.s.kafka_lib
        marker = lib / ".complete"
        if marker.exists():
            return lib
        lib.mkdir(parents=True, exist_ok=True)
        pom = DEPLOY / "local" / "kafka" / "pom.xml"
        self.say(f"{'kafka':<12} fetching Kafka {self.s.kafka_version} jars with Maven into {lib}")
        cmd = [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            f"-Dkafka.version={self.s.kafka_version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={lib}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not any(lib.glob("kafka_2.13-*.jar")):
            raise StackError(
                f"Maven could not fetch Kafka {self.s.kafka_version} jars "
                f"(exit {result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        marker.write_text(self.s.kafka_version)
        return lib

    def _kafka_prepare(self) -> None:
        lib = self.fetch_kafka_jars()
        kdir = self._dir("kafka")
        data = kdir / "data"
        template = string.Template((DEPLOY / "local" / "kafka" / "server.properties").read_text())
        props = kdir / "server.properties"
        props.write_text(
            template.substitute(
                host=self.s.host,
                port=self.s.kafka_port,
                controller_port=self.s.kafka_controller_port,
                sasl_port=self.s.kafka_sasl_port,
                data_dir=data,
                partitions=self.s.partitions,
            )
        )
        write_log4j(kdir)
        if not (data / "meta.properties").exists():
            format_storage(lib, kdir, new_cluster_id())

    def _kafka_command(self) -> list[str]:
        return broker_command(self.s.kafka_lib, self._dir("kafka"), self.s.kafka_heap)

    def _kafka_healthy(self) -> bool:
        if not port_open(self.s.host, self.s.kafka_port):
            return False
        try:
            return asyncio.run(self._kafka_metadata_ok())
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False

    async def _kafka_metadata_ok(self) -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**client_options(self.s), request_timeout_ms=3000)
        await admin.start()
        try:
            await admin.list_topics()
            return True
        finally:
            await admin.close()

    def topic_names(self) -> list[str]:
        return [*self.s.topics.values(), self.s.dead_letter_topic, self.s.events_topic]

    async def create_topics(self) -> list[str]:
        return await create_topics(self.s, self.topic_names())

    # ---- Redis ------------------------------------------------------------------

    def _redis_command(self) -> list[str]:
        return [
            "redis-server",
            "--bind",
            self.s.host,
            "--port",
            str(self.s.redis_port),
            "--dir",
            str(self._dir("redis")),
            # Leases and identity links live here (call attribution): keep them
            # through a restart, losing at most a second's writes.
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--protected-mode",
            "yes",
        ]

    def _redis_healthy(self) -> bool:
        try:
            with socket.create_connection((self.s.host, self.s.redis_port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    # ---- Prometheus and Alertmanager ---------------------------------------------------

    def targets_dir(self) -> Path:
        return self._dir("prometheus") / "targets"

    def write_scrape_targets(self, ports: list[int], name: str = "workers") -> Path:
        """Tell Prometheus (file_sd, re-read within seconds) which workers to scrape."""
        import json

        tdir = self.targets_dir()
        tdir.mkdir(parents=True, exist_ok=True)
        path = tdir / f"{name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps([{"targets": [f"{self.s.host}:{p}" for p in ports], "labels": {}}])
        )
        tmp.replace(path)
        return path

    def _prometheus_prepare(self) -> None:
        pdir = self._dir("prometheus")
        template = string.Template((DEPLOY / "local" / "prometheus.yml").read_text())
        (pdir / "prometheus.yml").write_text(
            template.substitute(
                scrape_interval=self.s.scrape_interval,
                rules_dir=self.write_rules().parent,
                targets_dir=self.targets_dir(),
                alertmanager=f"{self.s.host}:{self.s.alertmanager_port}",
            )
        )
        if not any(self.targets_dir().glob("*.json")):
            self.write_scrape_targets([self.s.web_port])

    def write_rules(self, settings: Settings | None = None) -> Path:
        """Render the rules for these settings (FUNNEL_ALERT_*) where Prometheus reads them."""
        from stream.ops.rules import render_rules

        path = self._dir("prometheus") / "rules" / "funnel.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_rules(settings or self.s))
        return path

    def reload_prometheus(self) -> None:
        """Make a running Prometheus re-read its config and rules (lifecycle API)."""
        url = f"http://{self.s.host}:{self.s.prometheus_port}/-/reload"
        request = urllib.request.Request(url, method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            if resp.status != 200:
                raise StackError(f"Prometheus reload at {url} answered {resp.status}")

    def _prometheus_command(self) -> list[str]:
        pdir = self._dir("prometheus")
        return [
            "prometheus",
            f"--config.file={pdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={pdir / 'data'}",
            f"--web.listen-address={self.s.host}:{self.s.prometheus_port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=2d",
        ]

    def _alertmanager_prepare(self) -> None:
        adir = self._dir("alertmanager")
        template = string.Template((DEPLOY / "local" / "alertmanager.yml").read_text())
        (adir / "alertmanager.yml").write_text(
            template.substitute(webhook_url=self.s.alert_webhook)
        )

    def _alertmanager_command(self) -> list[str]:
        adir = self._dir("alertmanager")
        binary = shutil.which("prometheus-alertmanager") or "alertmanager"
        return [
            binary,
            f"--config.file={adir / 'alertmanager.yml'}",
            f"--storage.path={adir / 'data'}",
            f"--web.listen-address={self.s.host}:{self.s.alertmanager_port}",
            "--cluster.listen-address=",
        ]
