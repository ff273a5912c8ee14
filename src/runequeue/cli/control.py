"""Steering and watching workers through their backend: `rune workers`, `queue:restart`,
`queue:pause`, `queue:resume` and `queue:monitor`."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
import msgspec
from rich.markup import escape
from rich.table import Table

from runequeue import worker_control
from runequeue.cli.app import cli
from runequeue.cli.common import config_for, console
from runequeue.config import QueueConfig
from runequeue.drivers import open_driver, require_a_queue
from runequeue.drivers.base import Control
from runequeue.queue import Queue

T = TypeVar("T")


def _with_control(connection: str | None, call: Callable[[Control], Awaitable[T]]) -> T:
    """Run ``call`` with the control values of the backend ``connection`` names."""
    config = config_for(connection)
    require_a_queue(config)

    async def run() -> T:
        driver = open_driver(config)
        try:
            return await call(driver.control())
        finally:
            await driver.close()

    return asyncio.run(run())


@cli.command("workers")
@click.argument("connection", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, for scripts.")
def workers(connection: str | None, as_json: bool) -> None:
    """List the live workers of a backend (any host): queues, jobs running and done.

    A worker refreshes its record every second; one that died drops out within 10 seconds.

    \b
    Example:
      rune workers redis --json
    """
    records = _with_control(connection, worker_control.live_workers)
    if as_json:
        for record in records:
            click.echo(msgspec.json.encode(record))
        return
    if not records:
        console.print("no live workers")
        return
    table = Table(box=None, pad_edge=False)
    for header in ("worker", "queues", "running", "concurrency", "done", "up", "last seen"):
        table.add_column(header, no_wrap=True)
    now = time.time()
    for record in records:
        table.add_row(
            escape(record.id), escape(",".join(record.queues)), str(record.running),
            str(record.concurrency), str(record.processed),
            str(dt.timedelta(seconds=int(now - record.started_at))),
            f"{max(now - record.last_seen, 0):.0f}s ago",
        )  # fmt: skip
    console.print(table)


@cli.command("queue:restart")
@click.argument("connection", required=False)
def queue_restart(connection: str | None) -> None:
    """Ask every worker of a backend, on every host, to finish its running jobs and exit, so its
    supervisor starts it again on new code (run after a deploy).

    Workers see it within about a second.

    \b
    Example:
      rune queue:restart
    """
    _with_control(connection, worker_control.signal_restart)
    console.print("restart signalled: workers stop once their running jobs end")


@cli.command("queue:pause")
@click.argument("queue")
@click.argument("connection", required=False)
def queue_pause(queue: str, connection: str | None) -> None:
    """Stop workers taking jobs from QUEUE (they keep running, and finish what they hold);
    `rune queue:resume QUEUE` lets them go on. Workers see it within about a second.

    \b
    Example:
      rune queue:pause emails
    """
    _with_control(connection, lambda control: worker_control.pause(control, queue))
    console.print(f"paused {queue}")


@cli.command("queue:resume")
@click.argument("queue")
@click.argument("connection", required=False)
def queue_resume(queue: str, connection: str | None) -> None:
    """Let workers take jobs from a paused QUEUE again.

    \b
    Example:
      rune queue:resume emails
    """
    _with_control(connection, lambda control: worker_control.resume(control, queue))
    console.print(f"resumed {queue}")


def _thresholds(ctx: click.Context, param: click.Parameter, text: str) -> dict[str, int]:
    limits: dict[str, int] = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        queue, _, limit = part.rpartition(":")
        if not queue or not limit.isdigit():
            raise click.BadParameter(f"{part!r}: write QUEUE:MAX, as in emails:100,default:1000")
        limits[queue] = int(limit)
    if not limits:
        raise click.BadParameter("name at least one QUEUE:MAX")
    return limits


@cli.command("queue:monitor")
@click.argument("thresholds", metavar="QUEUE:MAX[,QUEUE:MAX...]", callback=_thresholds)
@click.argument("connection", required=False)
def queue_monitor(thresholds: dict[str, int], connection: str | None) -> None:
    """Print each queue's size (and whether it is paused); exit 1 if one is over its MAX.

    For cron and alerting.

    \b
    Example:
      rune queue:monitor emails:100,default:1000
    """
    config = config_for(connection)
    require_a_queue(config)
    paused = _with_control(connection, worker_control.paused_queues)
    over = [_report(config, queue, limit, queue in paused) for queue, limit in thresholds.items()]
    if any(over):
        sys.exit(1)


def _report(config: QueueConfig, queue: str, limit: int, paused: bool) -> bool:
    size = Queue.size(config, queue)
    state = "[red]OVER[/red]" if size > limit else "[green]ok[/green]"
    note = " (paused)" if paused else ""
    console.print(f"{state} {escape(queue)}: {size} / {limit}{note}")
    return size > limit
