"""Servers a test owns, on free loopback ports, so it can stop, kill and restart them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """A redis-server of the test's own, with an append-only file unless told otherwise."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.port = free_port()
        self.directory = directory
        self.extra = extra or ("--appendonly", "yes", "--appendfsync", "everysec")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--dir", str(self.directory), *self.extra]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.answers():
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def answers(self) -> bool:
        try:
            client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)
            self.process = None


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (port + 10000) is free too.

    Each pytest-xdist worker draws from a range of its own below Linux's ephemeral ports (from
    32768, where `free_port`'s come from): two workers starting clusters at once would otherwise
    both find the same port free, and a node would join the wrong cluster."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    first = 20000 + 200 * (worker % 12)
    for port in range(first, first + 200):
        if port not in taken and _free(port) and _free(port + 10000):
            taken.add(port)
            return port
    raise RuntimeError(f"no free port for a Redis Cluster node in {first}-{first + 199}")


class OwnRedisCluster:
    """A Redis Cluster of the test's own: ``masters`` masters with ``replicas`` replicas each,
    on free loopback ports, made with ``redis-cli --cluster create``."""

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 1) -> None:
        self.directory = directory
        self.replicas = replicas
        self.nodes: list[OwnRedis] = []
        taken: set[int] = set()
        for _ in range(masters * (1 + replicas)):
            port = free_cluster_port(taken)
            node_dir = directory / f"node-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            node = OwnRedis(node_dir, "--cluster-enabled", "yes", "--cluster-node-timeout",
                            "1000", "--appendonly", "yes", "--appendfsync", "everysec")  # fmt: skip
            node.port = port
            self.nodes.append(node)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas",
             str(self.replicas), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
        self.wait_until_ok()

    def wait_until_ok(self, timeout_s: float = 30) -> None:
        """Until every running node says the cluster is ok and every slot has a master."""
        deadline = time.monotonic() + timeout_s
        while True:
            if all(self._ok(node) for node in self.nodes if node.process is not None):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become ok")
            time.sleep(0.1)

    @staticmethod
    def _ok(node: OwnRedis) -> bool:
        info = _ask(node.port, lambda client: client.cluster("info"))
        if isinstance(info, bytes):
            return b"cluster_state:ok" in info
        return isinstance(info, dict) and info.get("cluster_state") == "ok"

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                node.stop(signal.SIGKILL)


class OwnSentinels:
    """A master, its replica, and three Sentinels watching them as ``mymaster`` (quorum 2), on
    free loopback ports: a failover takes a few seconds (down after 1 s)."""

    SERVICE = "mymaster"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.master = OwnRedis(_subdir(directory, "master"))
        self.replica = OwnRedis(_subdir(directory, "replica"))
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    def start(self) -> None:
        self.master.start()
        self.replica.extra = (
            *self.replica.extra,
            "--replicaof",
            "127.0.0.1",
            str(self.master.port),
        )
        self.replica.start()
        for port in self.sentinel_ports:
            config = self.directory / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                f"sentinel failover-timeout {self.SERVICE} 5000\n"
            )
            command = ["redis-server", str(config), "--sentinel"]
            self._sentinels.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        self.wait_for_master(self.master.port)

    def current_master(self) -> int | None:
        """The master's port as the Sentinels name it now (None: none answers yet)."""
        for port in self.sentinel_ports:
            try:
                client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
                try:
                    address = client.sentinel_get_master_addr_by_name(self.SERVICE)
                finally:
                    client.close()
            except redis.RedisError:
                continue
            if isinstance(address, tuple):
                return int(address[1])
        return None

    def wait_for_master(self, port: int, timeout_s: float = 30) -> None:
        """Until the Sentinels name ``port`` as the master and it answers as one."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.current_master() == port and self._is_master(port):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Sentinels did not settle on 127.0.0.1:{port}")
            time.sleep(0.1)

    @staticmethod
    def _is_master(port: int) -> bool:
        info = _ask(port, lambda client: client.info("replication"))
        return isinstance(info, dict) and info.get("role") == "master"

    def stop(self) -> None:
        for sentinel in self._sentinels:
            sentinel.kill()
            sentinel.wait(timeout=10)
        self._sentinels = []
        for server in (self.master, self.replica):
            if server.process is not None:
                server.stop(signal.SIGKILL)


def _subdir(directory: Path, name: str) -> Path:
    path = directory / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ask(port: int, question: Callable[[redis.Redis], Any]) -> Any:
    """``question``'s answer from the server on ``port``; None if it does not answer."""
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
        try:
            return question(client)
        finally:
            client.close()
    except redis.RedisError:
        return None
