"""``python manage.py rune ...``: every ``rune`` command on the project's configuration (and
``call_command("rune", "queue:size")`` from code)."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no types
    help = "runequeue's commands (python manage.py rune --help)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("rune_args", nargs=argparse.REMAINDER)

    def run_from_argv(self, argv: list[str]) -> None:
        # rune parses its own arguments: everything after "rune" is handed over untouched.
        _run(argv[2:], prog=f"{argv[0]} rune")

    def handle(self, *args: Any, **options: Any) -> None:
        _run([*args, *options.get("rune_args", [])], prog="rune", standalone=False)


def _run(args: list[str], *, prog: str, standalone: bool = True) -> None:
    from runequeue.cli.app import cli
    from runequeue.cli.common import configured_by
    from runequeue.integrations.django import queue_config

    with configured_by(queue_config()):
        cli.main(args=args, prog_name=prog, standalone_mode=standalone)
