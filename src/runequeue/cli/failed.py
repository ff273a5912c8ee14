"""The failed-job commands: `rune queue:failed`, `queue:retry`, `queue:forget`, `queue:flush` and
`queue:prune-failed`, over `runequeue.failed_jobs.FailedJobs`."""

from __future__ import annotations

import os
import sys

import click
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runequeue import payload
from runequeue.cli.app import cli
from runequeue.cli.common import (
    config_for,
    console,
    database_url_option,
    import_job_modules,
    import_option,
)
from runequeue.failed_job import SHORT_ID_LENGTH, FailedJob
from runequeue.failed_jobs import FailedJobs


def _failed_jobs(database_url: str | None) -> FailedJobs:
    return FailedJobs(config_for(database_url=database_url))


@cli.command("queue:failed")
@click.argument("job_ref", metavar="[ID]", required=False)
@click.option("--queue", help="Only this queue.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, for scripts.")
@database_url_option
def queue_failed(
    job_ref: str | None, queue: str | None, as_json: bool, database_url: str | None
) -> None:
    """List failed jobs, or show one in full (payload and traceback).

    ID is the number in the first column, or the job's uuid (or its first 8 characters).

    \b
    Examples:
      rune queue:failed
      rune queue:failed 5
    """
    with _failed_jobs(database_url) as failed:
        if job_ref is not None:
            job = failed.find(job_ref)
            if job is None:
                raise click.ClickException(_not_found(job_ref))
            _show(job, as_json=as_json)
            return
        jobs = failed.list(queue)
    if as_json:
        for job in jobs:
            click.echo(msgspec.json.encode(_as_dict(job)))
    elif jobs:
        _print_table(jobs)
    else:
        console.print("no failed jobs")


@cli.command("queue:retry")
@click.argument("job_refs", metavar="ID... | all", nargs=-1, required=True)
@click.option("--queue", help="With `all`: only this queue.")
@import_option
@database_url_option
def queue_retry(
    job_refs: tuple[str, ...], queue: str | None, imports: tuple[str, ...], database_url: str | None
) -> None:
    """Push failed jobs back onto their connection and queue, attempts reset.

    ID is the number in the first column, or the job's uuid (or its first 8 characters).
    Jobs of the `sync` connection run right here, so name their modules with --import.
    Exits 1 if any job could not be retried.

    \b
    Examples:
      rune queue:retry 5 7
      rune queue:retry all --queue emails
    """
    import_job_modules(imports)
    wanted = "all" if job_refs == ("all",) else list(job_refs)
    with _failed_jobs(database_url) as failed:
        outcomes = failed.retry(wanted, queue=queue)
    if not outcomes:
        console.print("no failed jobs to retry")
    for outcome in outcomes:
        colour = {"retried": "green", "missing": "yellow", "error": "red"}[outcome.status]
        named = outcome.row_id or escape(outcome.ref)  # 0: the ref named no row
        console.print(
            f"[{colour}]{outcome.status}[/{colour}] {named} {outcome.job_id} "
            f"{escape(outcome.detail)}"
        )
    if any(outcome.status != "retried" for outcome in outcomes):
        sys.exit(1)


@cli.command("queue:forget")
@click.argument("job_ref", metavar="ID")
@database_url_option
def queue_forget(job_ref: str, database_url: str | None) -> None:
    """Delete one failed job.

    ID is the number in the first column, or the job's uuid (or its first 8 characters).

    \b
    Example:
      rune queue:forget 5
    """
    with _failed_jobs(database_url) as failed:
        if not failed.forget(job_ref):
            raise click.ClickException(_not_found(job_ref))
    console.print(f"forgot failed job {job_ref}")


@cli.command("queue:flush")
@click.option("--hours", type=click.FloatRange(min=0), help="Only those older than this.")
@database_url_option
def queue_flush(hours: float | None, database_url: str | None) -> None:
    """Delete all failed jobs.

    \b
    Example:
      rune queue:flush --hours 72
    """
    with _failed_jobs(database_url) as failed:
        count = failed.flush(hours=hours)
    older = "" if hours is None else f" older than {hours:g} hours"
    console.print(f"deleted {count} failed job(s){older}")


@cli.command("queue:prune-failed")
@click.option(
    "--hours", type=click.FloatRange(min=0), default=24.0, show_default=True, help="Age to keep."
)
@database_url_option
def queue_prune_failed(hours: float, database_url: str | None) -> None:
    """Delete failed jobs older than --hours.

    \b
    Example:
      rune queue:prune-failed --hours 48
    """
    with _failed_jobs(database_url) as failed:
        count = failed.prune(hours=hours)
    console.print(f"deleted {count} failed job(s) older than {hours:g} hours")


def _not_found(job_ref: str) -> str:
    message = f"no failed job with id {job_ref}"
    if len(job_ref) < SHORT_ID_LENGTH and not job_ref.isdigit():
        message += f" (a uuid prefix needs {SHORT_ID_LENGTH} or more characters)"
    return message


def _print_table(jobs: list[FailedJob]) -> None:
    # Piped into grep or a file, nothing is cut to fit a terminal that is not there (COLUMNS, when
    # set, still wins).
    out = console
    if not console.is_terminal and "COLUMNS" not in os.environ:
        out = Console(width=100_000, soft_wrap=True)
    out.print(_table(jobs, out.width))


def _table(jobs: list[FailedJob], line_width: int) -> Table:
    # Narrow enough for 80 columns: the uuid is cut to its first 8 characters (which every
    # command accepts), and the exception to what fits; `rune queue:failed ID` shows it all.
    rows = [
        (
            str(job.id),
            job.short_id,
            job.job_name,
            f"{job.connection}/{job.queue}",
            job.failed_at.strftime("%m-%d %H:%M:%S"),
            job.exception_line,
        )
        for job in jobs
    ]
    headers = ("id", "uuid", "job", "queue", "failed (UTC)")
    table = Table(box=None, pad_edge=False)
    used = 0
    for position, header in enumerate(headers):  # whole, so they can be copied
        column_width = max(len(header), *(len(row[position]) for row in rows))
        table.add_column(header, no_wrap=True, min_width=column_width)
        used += column_width + 2  # and the padding between columns
    # The exception gives way: it gets what is left of the terminal, and no less than 20.
    room = max(line_width - used, 20)
    table.add_column("exception", no_wrap=True, overflow="ellipsis", max_width=room)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


def _show(job: FailedJob, *, as_json: bool) -> None:
    if as_json:
        click.echo(msgspec.json.encode(_as_dict(job)))
        return
    fields = [
        ("id", str(job.id)),
        ("uuid", job.job_id),
        ("job", job.job_name),
        ("connection", job.connection),
        ("queue", job.queue),
        ("failed at", job.failed_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
    ]
    for name, value in fields:
        click.echo(f"{name + ':':<12}{value}")
    click.echo("\npayload:")
    click.echo(_pretty_payload(job.payload))
    click.echo("\nexception:")
    click.echo(job.exception.rstrip())


def _pretty_payload(raw: bytes) -> str:
    """The stored payload as indented JSON; a signed payload's body, with its key named."""
    note = ""
    body = raw
    if raw.startswith(payload.SIGNED_PREFIX):
        parts = raw.split(b":", 3)
        if len(parts) == 4:
            note = f"(signed with key {parts[1].decode(errors='replace')!r})\n"
            body = parts[3]
    try:
        return note + msgspec.json.format(body, indent=2).decode("utf-8", errors="replace")
    except msgspec.DecodeError:
        return note + body.decode("utf-8", errors="backslashreplace")


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
