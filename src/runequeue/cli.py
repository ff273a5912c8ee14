"""The `rune` command line: parse, build the configuration, call the library, print."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
import msgspec
from rich.console import Console
from rich.table import Table

from runequeue import demo, eventloop
from runequeue.config import QueueConfig, imports_from_env
from runequeue.database import redacted
from runequeue.errors import RuneQueueError
from runequeue.eventloop import LoopChoice
from runequeue.failed import FailedJob
from runequeue.failures import FailedJobs
from runequeue.job import Backoff
from runequeue.logs import flush_logs, setup_worker_logging
from runequeue.queue import Queue
from runequeue.schema import migrate
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
@click.option("--strict", is_flag=True, help="Refuse to start if the backend could lose jobs.")
@click.option(
    "--loop",
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    default="auto",
    show_default=True,
    help="Event loop; auto takes uvloop when installed.",
)
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
    strict: bool,
    loop: LoopChoice,
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
        strict=strict,
    )
    try:
        new_loop = eventloop.loop_factory(loop)
    except ImportError as exc:
        raise click.ClickException(
            "uvloop is not installed: pip install 'runequeue[uvloop]'"
        ) from exc
    setup_worker_logging()
    try:
        sys.exit(eventloop.run(run_worker(config, options), new_loop))
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
    "--driver",
    type=click.Choice(["database", "sync", "redis"]),
    default="database",
    show_default=True,
    help="database: the embedded SQLite queue unless DATABASE_URL names another.",
)
def demo_command(driver: str) -> None:
    """Dispatch a few example jobs (one fails), process them and show what happened."""
    config = _config(driver)
    created = _call(partial(migrate, config.database_url))
    if created:
        console.print(
            f"rune migrate: created {', '.join(created)} in {redacted(config.database_url)}"
        )
    table = Table("job", "id", "outcome", title=f"runequeue demo on the {config.driver} driver")
    if config.driver == "sync":
        logging.basicConfig(level=logging.CRITICAL)  # the table says it all
        demo.run_sync_demo(config, table.add_row)
        console.print(table)
    else:
        _call(partial(demo.dispatch_examples, config, table.add_row))
        console.print(table)
        console.print("rune queue:work --queue demo --stop-when-empty:")
        setup_worker_logging()
        _call(partial(demo.work_examples, config))
        flush_logs()  # the worker's lines, before the failed-jobs table below them
    console.print("rune queue:failed — ChargeCard always declines, so it is there:")
    with FailedJobs(config) as failed:
        latest = [job for job in _call(failed.list) if job.job_name == "demo.ChargeCard"][-1:]
    for job in latest:
        console.print(f"  id {job.id}  {job.job_name}  {job.job_id}  [red]{job.summary}[/red]")
    console.print("Retry it with `rune queue:retry ID`; see them all with `rune queue:failed`.")


@cli.command("migrate")
@click.option("--database-url", help="SQLAlchemy URL (default: DATABASE_URL).")
def migrate_command(database_url: str | None) -> None:
    """Create runequeue's tables (failed_jobs) where missing."""
    config = _config(database_url=database_url)
    created = _call(partial(migrate, config.database_url))
    where = redacted(config.database_url)
    if created:
        console.print(f"created {', '.join(created)} in {where}")
    else:
        console.print(f"nothing to do: every table exists in {where}")


@cli.command("queue:failed")
@click.option("--queue", help="Only this queue.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, for scripts.")
def queue_failed(queue: str | None, as_json: bool) -> None:
    """List failed jobs."""
    with FailedJobs(_config()) as failed:
        jobs = _call(partial(failed.list, queue))
    if as_json:
        for job in jobs:
            click.echo(msgspec.json.encode(_as_dict(job)))
        return
    if not jobs:
        console.print("no failed jobs")
        return
    console.print(_failed_table(jobs))


@cli.command("queue:retry")
@click.argument("ids", nargs=-1, required=True)
@click.option("--queue", help="With `all`: only this queue.")
def queue_retry(ids: tuple[str, ...], queue: str | None) -> None:
    """Push failed jobs back onto their queue: IDS... or `all`."""
    wanted: list[int] | Literal["all"] = (
        "all" if ids == ("all",) else [_row_id(text) for text in ids]
    )
    with FailedJobs(_config()) as failed:
        outcomes = _call(partial(failed.retry, wanted, queue=queue))
    if not outcomes:
        console.print("no failed jobs to retry")
    for outcome in outcomes:
        colour = {"retried": "green", "missing": "yellow", "error": "red"}[outcome.status]
        status = f"[{colour}]{outcome.status}[/{colour}]"
        console.print(f"{status} {outcome.row_id} {outcome.job_id} {outcome.detail}")
    if any(outcome.status == "error" for outcome in outcomes):
        sys.exit(1)


@cli.command("queue:forget")
@click.argument("row_id", type=int)
def queue_forget(row_id: int) -> None:
    """Delete one failed job."""
    with FailedJobs(_config()) as failed:
        if not _call(partial(failed.forget, row_id)):
            raise click.ClickException(f"no failed job with id {row_id}")
    console.print(f"forgot failed job {row_id}")


@cli.command("queue:flush")
@click.option("--hours", type=float, help="Only those that failed more than this long ago.")
def queue_flush(hours: float | None) -> None:
    """Delete all failed jobs."""
    with FailedJobs(_config()) as failed:
        count = _call(partial(failed.flush, hours=hours))
    console.print(f"deleted {count} failed job(s)")


@cli.command("queue:prune-failed")
@click.option("--hours", type=float, default=24.0, show_default=True, help="Age to keep.")
def queue_prune_failed(hours: float) -> None:
    """Delete failed jobs older than --hours."""
    with FailedJobs(_config()) as failed:
        count = _call(partial(failed.prune, hours=hours))
    console.print(f"deleted {count} failed job(s) older than {hours:g} hours")


def _row_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a failed job id (or `all`)") from None


def _failed_table(jobs: list[FailedJob]) -> Table:
    table = Table("id", "uuid", "connection", "queue", "job", "failed at", "exception")
    for column in table.columns[:6]:
        column.overflow = "fold"  # ids and names must stay whole to be copied
    for job in jobs:
        failed_at = job.failed_at.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            str(job.id), job.job_id, job.connection, job.queue, job.job_name, failed_at, job.summary
        )
    return table


def _as_dict(job: FailedJob) -> dict[str, object]:
    return {
        "id": job.id,
        "uuid": job.job_id,
        "connection": job.connection,
        "queue": job.queue,
        "job": job.job_name,
        "failed_at": job.failed_at.isoformat(),
        "exception": job.exception,
        "payload": job.payload.decode("utf-8", errors="replace"),
    }


def _call(action: Callable[[], T]) -> T:
    try:
        return action()
    except RuneQueueError as exc:
        raise click.ClickException(str(exc)) from exc


def main() -> None:
    cli(prog_name="rune")
