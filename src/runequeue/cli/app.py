"""The `rune` group: its `-v` flag, and errors turned into one line and a non-zero exit."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from runequeue.errors import RuneQueueError
from runequeue.text import one_line

VERBOSE_HELP = "Show tracebacks, and the worker's DEBUG lines (tracebacks of failed attempts)."


class RuneGroup(click.Group):
    """A group whose commands fail with one line, and a traceback only under ``rune -v``."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except RuneQueueError as exc:
            if is_verbose(ctx):
                raise
            raise click.ClickException(one_line(str(exc))) from exc
        except Exception as exc:
            if is_verbose(ctx):
                raise
            raise click.ClickException(
                f"{type(exc).__name__}: {one_line(str(exc))} (`rune -v ...` shows the traceback)"
            ) from exc


def is_verbose(ctx: click.Context) -> bool:
    return bool(ctx.find_root().params.get("verbose"))


@click.group(cls=RuneGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help=VERBOSE_HELP)
@click.version_option(package_name="runequeue")
def cli(verbose: bool) -> None:
    """runequeue: background job queues.

    \b
    Start with:  rune demo
    Then:        rune migrate && rune queue:work database --import myapp.jobs
    """


def main() -> None:
    """``rune``: click's own error handling, except that every error is one line."""
    try:
        code = cli.main(prog_name="rune", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        _fail(f"{one_line(exc.format_message())}{hint}", exc.exit_code)
    except click.ClickException as exc:
        _fail(one_line(exc.format_message()), exc.exit_code)
    except click.Abort:
        _fail("aborted", 1)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)
