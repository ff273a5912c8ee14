"""`rune migrate` and `rune demo`."""

from __future__ import annotations

import logging

import click
from rich.markup import escape
from rich.table import Table

from runequeue.cli.app import cli
from runequeue.cli.common import config_for, console, rune_command
from runequeue.config import QueueConfig
from runequeue.db_engine import redacted
from runequeue.failed_jobs import FailedJobs
from runequeue.logs import flush_logs, setup_worker_logging
from runequeue.schema import run_migrations


@cli.command("migrate")
@click.option("--database-url", metavar="URL", help="SQLAlchemy URL [default: DATABASE_URL].")
def migrate_command(database_url: str | None) -> None:
    """Create runequeue's tables where missing: `failed_jobs`, and the database driver's `jobs`,
    `job_locks` (unique jobs), `job_batches`, `job_limits` (job middleware) and `job_control`
    (live workers, paused queues). Safe to run again; run it after upgrading runequeue.

    \b
    Example:
      rune migrate --database-url postgresql://app@db/app
    """
    config = config_for(database_url=database_url)
    console.print(run_migrations(config.database_url).describe(redacted(config.database_url)))


@cli.command("demo")
@click.option(
    "--driver",
    type=click.Choice(["database", "sync", "redis"]),
    default="database",
    show_default=True,
    help="database: the embedded SQLite queue unless DATABASE_URL names another.",
)
def demo_command(driver: str) -> None:
    """Dispatch a few example jobs (one fails), process them and show what happened.

    \b
    Example:
      rune demo --driver redis
    """
    # Imported here, not at the top: its job classes must not make a worker without --import
    # look as if it had the application's.
    from runequeue import demo

    config = config_for(driver)
    migration = run_migrations(config.database_url)
    if migration.created or migration.upgraded:
        console.print(f"rune migrate: {migration.describe(redacted(config.database_url))}")
    table = Table("job", "id", "outcome", title=f"runequeue demo on the {config.driver} driver")
    rune = rune_command()  # `.venv/bin/rune` when that is how the demo was run
    work = f"{rune} queue:work {driver} --import runequeue.demo --queue demo --stop-when-empty"
    if config.driver == "sync":
        logging.getLogger("runequeue").setLevel(logging.CRITICAL)  # the table says it all
        demo.run_sync_demo(config, table.add_row)
        console.print(table)
    else:
        demo.dispatch_examples(config, table.add_row)
        console.print(table)
        click.echo(f"$ {work}")  # not through rich: a command must never be wrapped
        setup_worker_logging()
        demo.work_examples(config)
        flush_logs()  # the worker's lines, before the failed-jobs table below them
    _show_failed_and_next_steps(config, rune, work)


def _show_failed_and_next_steps(config: QueueConfig, rune: str, work: str) -> None:
    click.echo(f"$ {rune} queue:failed  (ChargeCard always declines, so it is there)")
    with FailedJobs(config) as failed:
        latest = [job for job in failed.list() if job.job_name == "demo.ChargeCard"][-1:]
    for job in latest:
        error = escape(job.exception_line)
        console.print(f"  {job.id}  {job.short_id}  {job.job_name}  [red]{error}[/red]")
        click.echo("Try next:")  # click, not rich: a command must never be wrapped
        click.echo(f"  {rune} queue:failed {job.id}      # its payload and traceback")
        if config.driver == "sync":
            click.echo(
                f"  {rune} queue:retry {job.id} --import runequeue.demo"
                "      # runs it again here (and it declines again)"
            )
        else:
            click.echo(f"  {rune} queue:retry {job.id}       # back onto the demo queue")
            click.echo(f"  {work}")
