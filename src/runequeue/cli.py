"""The `rune` command line: parse, build the configuration, call the library, print."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from runequeue import demo
from runequeue.config import QueueConfig, imports_from_env
from runequeue.errors import RuneQueueError
from runequeue.job import Backoff
from runequeue.queue import Queue
from runequeue.worker import WorkerOptions, run_worker

console = Console()
T = TypeVar("T")


@click.group()
@click.version_option(package_name="runequeue")
def cli() -> None:
    """runequeue: background job queues."""


def _config(connection: str | None = None, **overrides: Any) -> QueueConfig:
    try:
        return QueueConfig.from_env(driver=connection, **overrides)
    except RuneQueueError as exc:
        raise click.ClickException(str(exc)) from exc


def _queue_names(text: str | None, config: QueueConfig) -> tuple[str, ...]:
    names = tuple(name.strip() for name in (text or "").split(",") if name.strip())
    return names or (config.queue_name,)


def _backoff(text: str) -> Backoff:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise click.BadParameter("seconds, or a comma-separated list of seconds") from None
    return values[0] if len(values) == 1 else values


def _import_job_modules(modules: list[str]) -> None:
    # The operator names these modules (flag or RUNE_IMPORTS); payloads never do.
    sys.path.insert(0, str(Path.cwd()))
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise click.ClickException(f"cannot import job module {module!r}: {exc}") from exc


@cli.command("queue:work")
@click.argument("connection", required=False)
@click.option("--queue", "queues", help="Queues in priority order, comma-separated.")
@click.option("--import", "imports", multiple=True, help="Module defining jobs (repeatable).")
@click.option("--concurrency", default=10, show_default=True, help="Jobs run at once.")
@click.option("--tries", default=3, show_default=True, help="Tries for jobs that set none.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds per attempt.")
@click.option(
    "--backoff", default="0", show_default=True, help="Seconds before a retry (or 10,60)."
)
@click.option("--sleep", default=3.0, show_default=True, help="Longest idle wait, in seconds.")
@click.option("--max-jobs", type=int, help="Stop after this many jobs.")
@click.option("--max-time", type=float, help="Stop after this many seconds.")
@click.option("--stop-when-empty", is_flag=True, help="Stop once the queues are empty.")
@click.option("--shutdown-timeout", default=25.0, show_default=True, help="Grace on SIGTERM (s).")
@click.option("--retry-after", type=float, help="Lease length in seconds (QUEUE_RETRY_AFTER).")
def queue_work(
    connection: str | None,
    queues: str | None,
    imports: tuple[str, ...],
    concurrency: int,
    tries: int,
    timeout: float,
    backoff: str,
    sleep: float,
    max_jobs: int | None,
    max_time: float | None,
    stop_when_empty: bool,
    shutdown_timeout: float,
    retry_after: float | None,
) -> None:
    """Process jobs from the queues until stopped (SIGTERM/SIGINT drain gracefully)."""
    config = _config(connection, retry_after_s=retry_after)
    _import_job_modules([*imports_from_env(), *imports])
    options = WorkerOptions(
        queues=_queue_names(queues, config),
        concurrency=concurrency,
        tries=tries,
        timeout_s=timeout if timeout > 0 else None,
        backoff=_backoff(backoff),
        sleep_s=sleep,
        max_jobs=max_jobs,
        max_time_s=max_time,
        stop_when_empty=stop_when_empty,
        shutdown_timeout_s=shutdown_timeout,
        lease_s=config.retry_after_s,
    )
    _setup_logging()
    try:
        sys.exit(asyncio.run(run_worker(config, options)))
    except RuneQueueError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command("queue:size")
@click.argument("connection", required=False)
@click.option("--queue", "queues", help="Queues, comma-separated.")
def queue_size(connection: str | None, queues: str | None) -> None:
    """How many jobs each queue holds (waiting, delayed and running)."""
    config = _config(connection)
    for name in _queue_names(queues, config):
        console.print(f"{name}: {_call(partial(Queue.size, config, name))}")


@cli.command("queue:clear")
@click.argument("connection", required=False)
@click.option("--queue", "queues", help="Queues, comma-separated.")
def queue_clear(connection: str | None, queues: str | None) -> None:
    """Delete every job waiting, delayed or running on the queues."""
    config = _config(connection)
    for name in _queue_names(queues, config):
        console.print(f"cleared {_call(partial(Queue.clear, config, name))} job(s) from {name}")


@cli.command("demo")
@click.option(
    "--driver", type=click.Choice(["sync", "redis"]), help="Default: QUEUE_DRIVER or sync."
)
def demo_command(driver: str | None) -> None:
    """Dispatch a few example jobs (one fails), process them and show what happened."""
    config = _config(driver)
    table = Table("job", "id", "outcome", title=f"runequeue demo on the {config.driver} driver")
    report = table.add_row
    if config.driver == "sync":
        logging.basicConfig(level=logging.CRITICAL)  # the table says it all
        failures = demo.run_sync_demo(config, report)
        console.print(table)
        console.print(
            f"{failures} job(s) failed, as the demo intends (ChargeCard always declines)."
        )
        return
    _setup_logging()
    failed = _call(lambda: asyncio.run(demo.run_redis_demo(config, report)))
    console.print(table)
    for failure in failed:
        console.print(f"[red]failed[/red] {failure.job_id}: {failure.exception.splitlines()[0]}")


def _call(action: Callable[[], T]) -> T:
    try:
        return action()
    except RuneQueueError as exc:
        raise click.ClickException(str(exc)) from exc


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout, force=True
    )


def main() -> None:
    cli(prog_name="rune")
