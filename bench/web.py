"""``python -m bench.web``: what dispatching one job from an async web handler costs the server.

Serves ``bench/web_app.py`` (Starlette) under uvicorn in one process on loopback (uvloop,
httptools, no access log), and loads it with ``wrk`` (Debian's package): ``GET /noop``, which
dispatches nothing, then ``POST /dispatch/<library>`` for each library, which enqueues one no-op
job as that library's users would from an async handler. Libraries are interleaved round by
round; the figures are medians of the rounds. For each load it reads:

- req/s and the p50 / p99 latency, from wrk's ``--latency`` output;
- the server process's user + system CPU time (/proc) per request served, and what dispatch adds
  to it: that minus the same round's ``/noop`` figure, on the same server;
- Redis commands per request: executed, from ``INFO commandstats`` before and after the load
  (commands that a Lua script runs count there too, and so does any other client of that Redis:
  run it on a quiet one; ``/noop``'s row shows the noise), and sent by the server, counted once
  per library with MONITOR over 20 requests in a row on the server's own Redis connections.

Only enqueueing is measured: no worker runs, and the queues are cleared after each load. Clearing
uses the peers' key prefixes (bench/libraries.py): do not run it beside ``python -m bench``.

    python -m bench.web --rounds 3 --duration 10 --connections 50 [--only runequeue,arq]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlparse

import redis

from bench.__main__ import ROOT
from bench.completion import REDIS_URL
from bench.cpu import cpu_seconds, redis_server_pid
from bench.libraries import RQ, Arq, Celery, Library, Saq, Taskiq
from bench.web_app import LIBRARIES, RUNEQUEUE_PREFIX

DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- web-results:start -->", "<!-- web-results:end -->"
NOOP = "noop"  # the row of GET /noop: the server alone
CENSUS_REQUESTS = 20
INSTALL_WRK = "wrk is not installed: `apt-get install -y wrk` (Debian's package) and run again"
BLOCKING = {"celery", "rq"}  # no async API: called directly in the handler, on the event loop


@dataclass
class Load:
    """One wrk run, as its ``--latency`` output reports it."""

    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: str  # socket errors and non-2xx answers, "" when none


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _UNITS_MS[match[2]]


def parse_wrk(output: str) -> Load:
    """req/s, p50, p99 and the request count from ``wrk --latency`` output."""
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    requests = re.search(r"^\s+(\d+) requests in ", output, re.MULTILINE)
    per_second = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if requests is None or per_second is None or set(percentiles) != {"50", "99"}:
        raise ValueError(f"unexpected wrk output:\n{output}")
    errors = [line.strip() for line in output.splitlines()
              if line.strip().startswith(("Socket errors:", "Non-2xx"))]  # fmt: skip
    return Load(int(requests[1]), float(per_second[1]), _ms(percentiles["50"]),
                _ms(percentiles["99"]), "; ".join(errors))  # fmt: skip


def run_wrk(url: str, *, duration: int, connections: int, post: Path | None) -> Load:
    """One thread, ``connections`` requests in flight, for ``duration`` seconds."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "--latency"]
    command += ["-s", str(post)] if post else []
    done = subprocess.run([*command, url], capture_output=True, text=True, check=True,
                          timeout=duration + 60)  # fmt: skip
    return parse_wrk(done.stdout)


def settle(pid: int) -> None:
    """Wait (5 s at most) until process ``pid`` is idle: when wrk stops, the server still runs
    the handlers of the requests it had in flight, whose costs belong to the load just ended."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(0.1)
        if cpu_seconds(pid) == before:  # not one clock tick (10 ms) in 100 ms
            return


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(names: list[str], folder: Path) -> Iterator[tuple[int, str]]:
    """uvicorn in a subprocess serving ``names``: its pid and base URL, once it answers."""
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "bench.web_app:app", "--host", "127.0.0.1",
               "--port", str(port), "--loop", "uvloop", "--http", "httptools",
               "--no-access-log", "--log-level", "warning", "--lifespan", "on"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_WEB_LIBRARIES": ",".join(names)}
    log = folder / "uvicorn.log"
    with open(log, "wb") as stderr:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=stderr)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _answers(base):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield server.pid, base
    except BaseException:
        print(f"uvicorn's log:\n{log.read_text()[-4000:]}", file=sys.stderr)
        raise
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _answers(base: str) -> bool:
    try:
        return _request(base, NOOP) == 200
    except OSError:
        return False


def _request(base: str, name: str, connection: http.client.HTTPConnection | None = None) -> int:
    own = connection is None
    if connection is None:
        connection = http.client.HTTPConnection(urlparse(base).netloc, timeout=10)
    try:
        if name == NOOP:
            connection.request("GET", "/noop")
        else:
            connection.request("POST", f"/dispatch/{name}", body=b"")
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        if own:
            connection.close()


def served(base: str) -> int:
    """Requests the server has answered: those in flight when wrk stopped count too."""
    connection = http.client.HTTPConnection(urlparse(base).netloc, timeout=10)
    try:
        connection.request("GET", "/served")
        return int(json.loads(connection.getresponse().read())["served"])
    finally:
        connection.close()


def _commands(client: redis.Redis) -> Counter[str]:
    """Calls so far of every command, by name (``INFO commandstats``)."""
    stats = cast(dict[str, dict[str, int]], client.info("commandstats"))
    return Counter({key.removeprefix("cmdstat_"): int(value["calls"])
                    for key, value in stats.items()})  # fmt: skip


def _redis_ports(pid: int) -> set[int]:
    """Local ports of process ``pid``'s TCP connections to the Redis server."""
    redis_port = urlparse(REDIS_URL).port or 6379
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == redis_port:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def census(base: str, name: str, server_pid: int) -> Counter[str]:
    """The Redis commands that the server sends for each request to ``name``, by name, counted
    with MONITOR over ``CENSUS_REQUESTS`` requests made one after another (after a warm-up, so
    no connection is opened then)."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=30)
    marker = f"bench-web-census-{uuid.uuid4().hex}"
    sent: Counter[str] = Counter()
    connection = http.client.HTTPConnection(urlparse(base).netloc, timeout=10)
    try:
        with client.monitor() as monitor:  # type: ignore[no-untyped-call]
            for _ in range(CENSUS_REQUESTS):
                assert _request(base, name, connection) == 200
            client.echo(marker)
            ports = _redis_ports(server_pid)
            while marker not in (command := monitor.next_command())["command"]:
                if command["client_type"] == "tcp" and int(command["client_port"]) in ports:
                    sent[command["command"].split(" ", 1)[0].upper()] += 1
    finally:
        connection.close()
        client.close()
    return sent


def _flush_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for first in range(0, len(keys), 1000):
        client.unlink(*keys[first : first + 1000])
    client.close()


def clearers(names: list[str]) -> dict[str, Callable[[], None]]:
    """How to empty each library's queue: the peers' adapters in bench/libraries.py (skipping a
    library that is not installed); runequeue's keys here have a prefix of their own."""
    found: dict[str, Callable[[], None]] = {}
    for name in names:
        if name == "runequeue":
            found[name] = lambda: _flush_prefix(f"{RUNEQUEUE_PREFIX}:")
            continue
        peers: dict[str, Callable[[], Library]] = {
            "rq": RQ, "arq": Arq, "saq": Saq, "celery": Celery, "taskiq": Taskiq,
        }  # fmt: skip
        make = peers[name]
        try:
            found[name] = make().clear
        except ImportError:
            print(f"skipping {name}: not installed")
    return found


def measure(base: str, name: str, server: int, *, duration: int, connections: int,
            post: Path) -> dict[str, float]:  # fmt: skip
    """One load on ``name`` (or ``/noop``): its rates, and the server's and Redis's costs."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        redis_pid: int | None = redis_server_pid(client)
        redis_before = cpu_seconds(redis_pid) if redis_pid else 0.0
    except (OSError, redis.RedisError, ValueError):  # Redis elsewhere: its CPU is not seen
        redis_pid, redis_before = None, 0.0
    commands_before, served_before = _commands(client), served(base)
    cpu_before = cpu_seconds(server)
    url = f"{base}/noop" if name == NOOP else f"{base}/dispatch/{name}"
    load = run_wrk(url, duration=duration, connections=connections,
                   post=None if name == NOOP else post)  # fmt: skip
    settle(server)
    cpu = cpu_seconds(server) - cpu_before
    redis_cpu = cpu_seconds(redis_pid) - redis_before if redis_pid else float("nan")
    executed = _commands(client) - commands_before
    executed["info"] -= 1  # the INFO that read "before"
    client.close()
    count = max(served(base) - served_before, 1)  # (GET /served counts not itself)
    if "Non-2xx" in load.errors:  # a failed dispatch answers fast: the figures would lie
        raise RuntimeError(f"{name}: {load.errors}")
    if load.errors:
        print(f"  {name}: {load.errors}")
    top = ", ".join(f"{command} {calls / count:.2f}" for command, calls in executed.most_common(6)
                    if calls / count >= 0.01)  # fmt: skip
    print(f"  {name}: {load.per_second:,.0f} req/s, p50 {load.p50_ms:.2f} ms, p99 "
          f"{load.p99_ms:.2f} ms, server CPU {cpu / count * 1e6:.1f} µs/request, redis-server "
          f"{redis_cpu / count * 1e6:.1f} µs/request; Redis commands per request: "
          f"{top or 'none'}", flush=True)  # fmt: skip
    return {
        "req/s": load.per_second, "p50 ms": load.p50_ms, "p99 ms": load.p99_ms,
        "CPU µs/request": cpu / count * 1e6, "redis-server µs/request": redis_cpu / count * 1e6,
        "commands executed/request": sum(executed.values()) / count,
    }  # fmt: skip


def _cell(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def table(medians: dict[str, dict[str, float]], sent: dict[str, Counter[str]]) -> str:
    lines = [
        "| library | req/s | p50 ms | p99 ms | CPU µs/request | µs added by dispatch "
        "| Redis commands/request, sent | executed (with those in scripts) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in medians.items():
        label = "none (`GET /noop`)" if name == NOOP else f"{name}{' ¹' * (name in BLOCKING)}"
        sends = sent.get(name)
        lines.append(
            f"| {label} | {m['req/s']:,.0f} | {m['p50 ms']:.2f} | {m['p99 ms']:.2f} "
            f"| {_cell(m['CPU µs/request'])} | {_cell(m.get('µs added by dispatch'))} "
            f"| {_cell(sends.total() / CENSUS_REQUESTS if sends is not None else None, 2)} "
            f"| {_cell(m['commands executed/request'], 2)} |"
        )
    return "\n".join(lines)


def sent_by_name(sent: dict[str, Counter[str]]) -> str:
    return "\n".join(
        f"- **{name}**: " + (", ".join(f"{command} x {calls / CENSUS_REQUESTS:g}"
                                       for command, calls in counts.most_common()) or "none")
        for name, counts in sent.items() if name != NOOP
    )  # fmt: skip


def write_docs(body: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{DOC} has no {START} ... {END} section")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{START}\n{body}\n{END}{tail}", encoding="utf-8")


Medians = dict[str, dict[str, float]]  # library -> metric -> median of the rounds


def run(names: list[str], *, rounds: int, duration: int,
        connections: int) -> tuple[Medians, dict[str, Counter[str]]]:  # fmt: skip
    """Every round's loads, interleaved; the medians per library, and the census."""
    clear = clearers(names)
    names = [NOOP, *(name for name in names if name in clear)]
    runs: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    sent: dict[str, Counter[str]] = {}
    with tempfile.TemporaryDirectory() as folder:
        post = Path(folder) / "post.lua"
        post.write_text('wrk.method = "POST"\nwrk.body = ""\n', encoding="utf-8")
        with serving(names[1:], Path(folder)) as (server, base):
            print(f"uvicorn (pid {server}) at {base}; warm-up, {CENSUS_REQUESTS}-request census")
            for name in names:  # connections opened, code paths warm
                run_wrk(f"{base}/noop" if name == NOOP else f"{base}/dispatch/{name}",
                        duration=1, connections=connections,
                        post=None if name == NOOP else post)  # fmt: skip
                settle(server)
                sent[name] = census(base, name, server)
                clear.get(name, lambda: None)()
            for round_number in range(1, rounds + 1):
                print(f"round {round_number}/{rounds}", flush=True)
                for name in names:  # interleaved, /noop first: the round's baseline
                    result = measure(base, name, server, duration=duration,
                                     connections=connections, post=post)  # fmt: skip
                    clear.get(name, lambda: None)()
                    if name != NOOP:
                        baseline = runs[NOOP]["CPU µs/request"][-1]
                        result["µs added by dispatch"] = result["CPU µs/request"] - baseline
                    for metric, value in result.items():
                        runs[name].setdefault(metric, []).append(value)
    medians = {name: {metric: statistics.median(values) for metric, values in metrics.items()}
               for name, metrics in runs.items()}  # fmt: skip
    return medians, sent


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.web", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per load")
    parser.add_argument("--connections", type=int, default=50, help="requests in flight")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="measure only these libraries")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit(INSTALL_WRK)
    names = list(LIBRARIES)
    if args.only:
        if args.write_docs:  # the docs' table compares every library
            parser.error("--only and --write-docs do not go together")
        wanted = args.only.split(",")
        if unknown := set(wanted) - set(names):
            parser.error(f"unknown: {', '.join(sorted(unknown))} (have {', '.join(names)})")
        names = [name for name in names if name in wanted]
    medians, sent = run(names, rounds=args.rounds, duration=args.duration,
                        connections=args.connections)  # fmt: skip
    header = (
        f"Last run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; one uvicorn process "
        f"(uvloop, httptools), `wrk -t1 -c{args.connections} -d{args.duration}s --latency`, "
        f"medians of {args.rounds} interleaved rounds, Redis on loopback."
    )
    notes = (
        "¹ No async API: the blocking call (`noop.delay()`, `queue.enqueue()`) is made directly "
        "in the async handler, as most code does, and holds the event loop for its round trip."
        f"\n\nCommands each dispatch sends, by name (MONITOR, {CENSUS_REQUESTS} requests):\n\n"
        + sent_by_name(sent)
    )
    body = f"{header}\n\n{table(medians, sent)}\n\n{notes}"
    print(f"\n{body}")
    if args.write_docs:
        write_docs(body)


if __name__ == "__main__":
    main()
