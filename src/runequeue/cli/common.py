"""What the commands share: the configuration, queue lists, job modules and error mapping."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from rich.console import Console

from runequeue.config import QueueConfig, imports_from_env
from runequeue.errors import ConfigError, RuneQueueError
from runequeue.text import one_line


class _ConsoleOfTheMoment:
    """rich's `Console`, made afresh for each use: a Console reads COLUMNS once, when made, and
    commands invoked one after another in one process (``CliRunner``, an application calling the
    CLI) must each print at the width of their own environment."""

    def __getattr__(self, name: str) -> Any:
        # soft_wrap: a line with an id or a command in it must stay whole
        return getattr(Console(soft_wrap=True), name)


console = cast(Console, _ConsoleOfTheMoment())
F = TypeVar("F", bound=Callable[..., Any])


# A framework's configuration for the commands it runs (`flask rune`), in place of the
# environment's; set by `configured_by`.
_framework_config: QueueConfig | None = None


@contextlib.contextmanager
def configured_by(config: QueueConfig) -> Iterator[None]:
    """Commands run inside take ``config`` as the configuration, not the environment's."""
    global _framework_config
    before, _framework_config = _framework_config, config
    try:
        yield
    finally:
        _framework_config = before


def config_for(connection: str | None = None, **overrides: Any) -> QueueConfig:
    """The environment's (and ``.env``'s) configuration, or a framework's (`configured_by`),
    with the command's flags over it."""
    base = _framework_config
    if base is None:
        return QueueConfig.from_env(driver=connection, **overrides)
    if connection:
        base = base.with_driver(connection)
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def queue_names(text: str | None, config: QueueConfig) -> tuple[str, ...]:
    names = tuple(name.strip() for name in (text or "").split(",") if name.strip())
    return names or (config.queue_name,)


def import_option(function: F) -> F:
    return click.option(
        "--import",
        "imports",
        multiple=True,
        metavar="MODULE",
        help="Module defining your job classes (repeatable; or RUNE_IMPORTS=a.jobs,b.jobs).",
    )(function)


def database_url_option(function: F) -> F:
    return click.option(
        "--database-url", metavar="URL", help="Database of failed_jobs (default: DATABASE_URL)."
    )(function)


def import_job_modules(flagged: tuple[str, ...]) -> list[str]:
    """Import the modules named by ``--import``, or else by ``RUNE_IMPORTS``; returns their names.

    The operator names these modules (a flag, the environment or ``.env``); payloads never do.
    """
    # Flags win over the environment, here as everywhere.
    modules, source = list(flagged), "--import"
    if not flagged:
        modules, source = imports_from_env(), "RUNE_IMPORTS"
    sys.path.insert(0, str(Path.cwd()))  # `myapp.jobs` from the project directory, as Python does
    for module in modules:
        named = f"job module {module!r} (from {source})"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise ConfigError(_not_found(named, module, exc)) from exc
        except RuneQueueError as exc:  # DuplicateJobName, say
            raise ConfigError(f"{named}: {one_line(str(exc))}") from exc
        except Exception as exc:
            raise ConfigError(f"{named} failed to import: {type(exc).__name__}: {exc}") from exc
    return modules


def _not_found(named: str, module: str, exc: ModuleNotFoundError) -> str:
    missing = exc.name or ""
    if missing and missing != module and not module.startswith(f"{missing}."):
        # The module was found; something it imports was not.
        return f"{named} imports {missing!r}, which is not installed in this environment"
    return (
        f"cannot import {named}: {exc}; run rune from your project's directory or add it "
        "to PYTHONPATH"
    )


def rune_command() -> str:
    """How to run ``rune`` again as this process was run, so printed commands work as printed:
    ``rune`` when it is on PATH, else the path it was started by (``.venv/bin/rune``)."""
    started_as = sys.argv[0]
    if Path(started_as).name == "rune":
        on_path = shutil.which("rune")
        if on_path is not None and Path(on_path).resolve() == Path(started_as).resolve():
            return "rune"
        return started_as
    return f"{sys.executable} -m runequeue"  # python -m runequeue
