"""`rune queue:work`, `queue:size` and `queue:clear`."""

from __future__ import annotations

import logging
import os
import sys

import click

from runequeue import eventloop, signals
from runequeue.cli.app import cli, is_verbose
from runequeue.cli.common import config_for, console, import_job_modules, import_option, queue_names
from runequeue.drivers import backend_of, require_a_queue
from runequeue.eventloop import LoopChoice
from runequeue.job import Backoff
from runequeue.logs import setup_worker_logging
from runequeue.queue import Queue
from runequeue.supervisor import SLOT_VARIABLE, Supervisor
from runequeue.worker import WorkerOptions, run_worker
from runequeue.worker_options import DEFAULT_CONCURRENCY


def _backoff(ctx: click.Context, param: click.Parameter, text: str) -> Backoff:
    """A click callback, so a bad value is reported against ``--backoff``."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise click.BadParameter("seconds, or a comma-separated list of seconds") from None
    if any(value < 0 for value in values):
        raise click.BadParameter("seconds must not be negative")
    return values[0] if len(values) == 1 else values


_positive = click.FloatRange(min=0, min_open=True)
_not_negative = click.FloatRange(min=0)


@cli.command("queue:work")
@click.argument("connection", required=False)
@import_option
@click.option(
    "--queue", "queues", metavar="A,B", help="Queues in priority order [default: QUEUE_NAME]."
)
@click.option(
    "--concurrency", type=click.IntRange(min=1), default=DEFAULT_CONCURRENCY, show_default=True,
    help="Jobs run at once.",
)  # fmt: skip
@click.option(
    "--tries", type=click.IntRange(min=1), default=3, show_default=True,
    help="Attempts for jobs that set no `tries`.",
)  # fmt: skip
@click.option(
    "--timeout", type=_not_negative, default=60.0, show_default=True,
    help="Seconds per attempt for jobs that set none; 0 means no timeout.",
)  # fmt: skip
@click.option(
    "--backoff", default="0", show_default=True, callback=_backoff,
    help="Seconds before a retry (10, or 10,60,300).",
)  # fmt: skip
@click.option(
    "--sleep", type=_positive, default=3.0, show_default=True,
    help="Longest idle wait in seconds (Redis and PostgreSQL wake an idle worker at once).",
)  # fmt: skip
@click.option("--max-jobs", type=click.IntRange(min=1), help="Stop after this many jobs.")
@click.option("--max-time", type=_positive, help="Stop after this many seconds.")
@click.option(
    "--stop-when-empty", is_flag=True,
    help="Stop once no job is ready and none runs (delayed jobs wait for a later worker).",
)  # fmt: skip
@click.option(
    "--shutdown-timeout", type=_not_negative, default=25.0, show_default=True,
    help="Seconds running jobs get to finish on SIGTERM.",
)  # fmt: skip
@click.option(
    "--retry-after", type=_positive, help="Lease length in seconds [default: QUEUE_RETRY_AFTER]."
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse to start if the backend is unreachable or could lose jobs.",
)
@click.option(
    "--loop", type=click.Choice(["auto", "asyncio", "uvloop"]), default="auto", show_default=True,
    help="Event loop; auto takes uvloop when installed.",
)  # fmt: skip
@click.option(
    "--metrics-port", type=click.IntRange(min=0, max=65535), metavar="PORT",
    help="Serve Prometheus metrics on this port (with --processes N, worker i on PORT+i-1); "
    "scrapes send Authorization: Bearer $RUNE_METRICS_TOKEN (one is made up and logged if unset).",
)  # fmt: skip
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True,
    help="Address the metrics listen on (0.0.0.0 for every interface).",
)  # fmt: skip
@click.option(
    "--no-metrics", "no_metrics", is_flag=True,
    help="Don't publish per-minute metrics and recent jobs to the backend (rune dashboard).",
)  # fmt: skip
@click.option(
    "--processes", type=click.IntRange(min=1), default=1, show_default=True,
    help="Worker processes to start and keep running (restarted on a crash, drained on SIGTERM).",
)  # fmt: skip
@click.option(
    "--log-config", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
    help="A logging.config file (.json: dictConfig, else INI) that configures all logging.",
)  # fmt: skip
@click.pass_context
def queue_work(
    ctx: click.Context,
    connection: str | None,
    imports: tuple[str, ...],
    queues: str | None,
    concurrency: int,
    tries: int,
    timeout: float,
    backoff: Backoff,
    sleep: float,
    max_jobs: int | None,
    max_time: float | None,
    stop_when_empty: bool,
    shutdown_timeout: float,
    retry_after: float | None,
    strict: bool,
    loop: LoopChoice,
    metrics_port: int | None,
    metrics_host: str,
    no_metrics: bool,
    processes: int,
    log_config: str | None,
) -> None:
    """Process jobs until stopped (SIGTERM/SIGINT let running jobs finish).

    CONNECTION is `redis` or `database` (default: QUEUE_DRIVER, from the environment or .env).
    The worker builds jobs only from the classes in the modules you name with --import (or
    RUNE_IMPORTS); it refuses to start without any.

    \b
    Examples:
      rune queue:work database --import myapp.jobs --queue high,default
      rune queue:work redis --import myapp.jobs --processes 4
    """
    signals.catch_early()
    config = config_for(connection, retry_after_s=retry_after)
    require_a_queue(config)
    if not backend_of(config).shared:
        raise click.ClickException(
            f"the {config.driver} driver keeps jobs inside the process that dispatched them, so "
            "a worker started here would never see one: run a Worker in that process (see "
            "docs/drivers.md), or use QUEUE_DRIVER=database or redis"
        )
    import_job_modules(imports)
    options = WorkerOptions(
        queues=queue_names(queues, config),
        concurrency=concurrency,
        tries=tries,
        timeout_s=timeout if timeout > 0 else None,
        backoff=backoff,
        sleep_s=sleep,
        max_jobs=max_jobs,
        max_time_s=max_time,
        stop_when_empty=stop_when_empty,
        shutdown_timeout_s=shutdown_timeout,
        strict=strict,
        handle_signals=True,
        metrics_port=_slot_port(metrics_port),
        metrics_host=metrics_host,
        metrics_token=os.environ.get("RUNE_METRICS_TOKEN") or None,
        publish_metrics=not no_metrics,
    )
    try:
        new_loop = eventloop.loop_factory(loop)
    except ImportError as exc:
        raise click.ClickException(
            "uvloop is not installed: pip install 'runequeue[uvloop]'"
        ) from exc
    level = logging.DEBUG if is_verbose(ctx) else logging.INFO
    setup_worker_logging(level=level, config_file=log_config)
    if processes > 1:
        supervisor = Supervisor(
            _child_command(), processes, restart_clean_exits=not stop_when_empty
        )
        sys.exit(supervisor.run())
    sys.exit(eventloop.run(run_worker(config, options), new_loop))


def _slot_port(port: int | None) -> int | None:
    """A supervised worker's metrics port: the one asked for, plus its slot (`SLOT_VARIABLE`)."""
    slot = os.environ.get(SLOT_VARIABLE, "")
    if port is None or not slot.isdigit() or port == 0:
        return port
    return port + int(slot) - 1


def _child_command() -> list[str]:
    """This command, as each supervised worker runs it: without ``--processes``."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            args.append(arg)
    return [sys.executable, "-m", "runequeue", *args]


@cli.command("queue:size")
@click.argument("connection", required=False)
@click.option("--queue", "queues", metavar="A,B", help="Queues [default: QUEUE_NAME].")
def queue_size(connection: str | None, queues: str | None) -> None:
    """How many jobs each queue holds (waiting, delayed and running).

    \b
    Example:
      rune queue:size redis --queue emails,default
    """
    config = config_for(connection)
    require_a_queue(config)
    for name in queue_names(queues, config):
        console.print(f"{name}: {Queue.size(config, name)}")


@cli.command("queue:clear")
@click.argument("connection", required=False)
@click.option("--queue", "queues", metavar="A,B", help="Queues [default: QUEUE_NAME].")
def queue_clear(connection: str | None, queues: str | None) -> None:
    """Delete every job waiting, delayed or running on the queues.

    \b
    Example:
      rune queue:clear database --queue emails
    """
    config = config_for(connection)
    require_a_queue(config)
    for name in queue_names(queues, config):
        console.print(f"cleared {Queue.clear(config, name)} job(s) from {name}")
