"""A local three-broker KRaft cluster on 127.0.0.1, for the broker-failure chaos scenario.

Each node is broker and controller (combined mode) with its own ports, data
and log under ``<run dir>/kafka-cluster/node<N>``; topics get three replicas
and ``min.insync.replicas=2``, so one node may fail without losing a write.
Nodes are started, killed (-9) and restarted one by one; the jars are the
single-broker stack's (fetched by Maven).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import string
import subprocess
import time
from pathlib import Path

from stream.config import Settings
from stream.net import port_open
from stream.ops.stack import (
    DEPLOY,
    Stack,
    StackError,
    broker_command,
    format_storage,
    log_tail,
    new_cluster_id,
    write_log4j,
)


class BrokerCluster:
    def __init__(self, settings: Settings, base_port: int, nodes: int = 3, heap: str = "384m"):
        self.s = settings
        self.nodes = list(range(1, nodes + 1))
        self.base_port = base_port
        self.heap = heap
        self.dir = settings.run_dir / "kafka-cluster"
        self.procs: dict[int, subprocess.Popen] = {}

    def port(self, node: int) -> int:
        return self.base_port + node - 1

    def controller_port(self, node: int) -> int:
        return self.base_port + 10 + node - 1

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.s.host}:{self.port(n)}" for n in self.nodes)

    def node_dir(self, node: int) -> Path:
        path = self.dir / f"node{node}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _prepare(self, lib: Path, cluster_id: str) -> None:
        template = string.Template(
            (DEPLOY / "local" / "kafka" / "cluster-node.properties").read_text()
        )
        voters = ",".join(f"{n}@{self.s.host}:{self.controller_port(n)}" for n in self.nodes)
        for n in self.nodes:
            ndir = self.node_dir(n)
            (ndir / "server.properties").write_text(
                template.substitute(
                    node_id=n,
                    voters=voters,
                    host=self.s.host,
                    port=self.port(n),
                    controller_port=self.controller_port(n),
                    data_dir=ndir / "data",
                    partitions=self.s.partitions,
                )
            )
            write_log4j(ndir)
            if not (ndir / "data" / "meta.properties").exists():
                format_storage(lib, ndir, cluster_id)

    def up(self, timeout: float = 120.0) -> None:
        """Format (once) and start every node; wait until the cluster answers."""
        lib = Stack(self.s).fetch_kafka_jars()
        self._prepare(lib, new_cluster_id())
        for n in self.nodes:
            self.start(n)
        deadline = time.monotonic() + timeout
        while not asyncio.run(self._brokers_alive(len(self.nodes))):
            if time.monotonic() > deadline:
                raise StackError(f"three-broker cluster not up after {timeout:.0f}s:\n"
                                 + "\n".join(log_tail(self.node_dir(n) / "kafka.log", 10)
                                             for n in self.nodes))  # fmt: skip
            time.sleep(1)

    def start(self, node: int) -> None:
        ndir = self.node_dir(node)
        if port_open(self.s.host, self.port(node)):
            raise StackError(f"kafka node {node}: port {self.port(node)} is already in use")
        with (ndir / "kafka.log").open("ab") as log:
            self.procs[node] = subprocess.Popen(
                broker_command(self.s.kafka_lib, ndir, self.heap),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ndir,
                start_new_session=True,
            )

    def kill(self, node: int) -> None:
        """kill -9: no controlled shutdown, leaderships move after the session times out."""
        proc = self.procs.pop(node, None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)

    def wait_alive(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not asyncio.run(self._brokers_alive(count)):
            if time.monotonic() > deadline:
                raise StackError(f"fewer than {count} brokers registered after {timeout:.0f}s")
            time.sleep(1)

    def down(self) -> None:
        for n in list(self.procs):
            proc = self.procs.pop(n)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)

    async def _brokers_alive(self, count: int) -> bool:
        try:
            meta = await self._metadata()
        except Exception:  # noqa: BLE001 - not up yet
            return False
        return len(meta.brokers()) >= count

    async def _metadata(self):
        from aiokafka import AIOKafkaClient

        client = AIOKafkaClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        await client.bootstrap()
        try:
            return await client.fetch_all_metadata()
        finally:
            await client.close()

    def leader(self, topic: str, partition: int) -> int:
        """The node id leading ``topic``'s ``partition`` now."""
        meta = asyncio.run(self._metadata())
        return meta.leader_for_partition(_tp(topic, partition))


def _tp(topic: str, partition: int):
    from aiokafka import TopicPartition

    return TopicPartition(topic, partition)
