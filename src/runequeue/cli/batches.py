"""The batch commands: `rune queue:batches`, `queue:retry-batch` and `queue:prune-batches`."""

from __future__ import annotations

import sys

import click
import msgspec
from rich.markup import escape
from rich.table import Table

from runequeue.batches import Batch
from runequeue.bus import Bus
from runequeue.cli.app import cli
from runequeue.cli.common import (
    config_for,
    console,
    database_url_option,
    import_job_modules,
    import_option,
)
from runequeue.config import QueueConfig
from runequeue.drivers import require_a_queue
from runequeue.failed_jobs import FailedJobs


def _config(connection: str | None, database_url: str | None = None) -> QueueConfig:
    """The configuration, on a backend that keeps batches (the sync driver keeps them inside the
    process that dispatched them, where no command can see them)."""
    overrides = {} if database_url is None else {"database_url": database_url}
    config = config_for(connection, **overrides)
    require_a_queue(config)
    return config


@cli.command("queue:batches")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, for scripts.")
@click.argument("connection", required=False)
def queue_batches(limit: int, as_json: bool, connection: str | None) -> None:
    """List batches, newest first.

    \b
    Examples:
      rune queue:batches
      rune queue:batches redis --json
    """
    batches = Bus.batches(_config(connection), limit)
    if as_json:
        for batch in batches:
            click.echo(msgspec.json.encode(batch.to_dict()))
    elif batches:
        console.print(_table(batches))
    else:
        console.print("no batches")


@cli.command("queue:retry-batch")
@click.argument("batch_id", metavar="ID")
@click.argument("connection", required=False)
@import_option
@database_url_option
def queue_retry_batch(
    batch_id: str, connection: str | None, imports: tuple[str, ...], database_url: str | None
) -> None:
    """Retry the failed jobs of a batch (from failed_jobs, attempts reset).

    Exits 1 if any could not be retried.

    \b
    Example:
      rune queue:retry-batch 0f3c...
    """
    import_job_modules(imports)
    config = _config(connection, database_url)
    batch = Bus.find_batch(config, batch_id)
    if batch is None:
        raise click.ClickException(f"no batch with id {batch_id}")
    if not batch.failed_job_ids:
        console.print(f"batch {batch_id} has no failed jobs")
        return
    with FailedJobs(config) as failed:
        outcomes = failed.retry(list(batch.failed_job_ids))
    for outcome in outcomes:
        colour = {"retried": "green", "missing": "yellow", "error": "red"}[outcome.status]
        console.print(f"[{colour}]{outcome.status}[/{colour}] {outcome.job_id or outcome.ref} "
                      f"{escape(outcome.detail)}")  # fmt: skip
    if any(outcome.status != "retried" for outcome in outcomes):
        sys.exit(1)


@cli.command("queue:prune-batches")
@click.option(
    "--hours", type=click.FloatRange(min=0), default=24.0, show_default=True,
    help="Delete batches finished more than this many hours ago.",
)  # fmt: skip
@click.option(
    "--unfinished", type=click.FloatRange(min=0), metavar="HOURS",
    help="Also delete unfinished batches created more than HOURS ago.",
)  # fmt: skip
@click.argument("connection", required=False)
def queue_prune_batches(hours: float, unfinished: float | None, connection: str | None) -> None:
    """Delete old batch records (their jobs are not touched).

    \b
    Example:
      rune queue:prune-batches --hours 48
    """
    count = Bus.prune_batches(_config(connection), hours=hours, unfinished_hours=unfinished)
    console.print(f"deleted {count} batch(es)")


def _table(batches: list[Batch]) -> Table:
    table = Table(box=None, pad_edge=False)
    for header in ("id", "name", "progress", "total", "pending", "failed", "created (UTC)",
                   "state"):  # fmt: skip
        table.add_column(header, no_wrap=True)
    for batch in batches:
        state = "cancelled" if batch.cancelled() else "finished" if batch.finished() else "running"
        table.add_row(
            batch.id, escape(batch.name), f"{batch.progress}%", str(batch.total_jobs),
            str(batch.pending_jobs), str(batch.failed_jobs),
            batch.created_at.strftime("%m-%d %H:%M:%S"), state,
        )  # fmt: skip
    return table
