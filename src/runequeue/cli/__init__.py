"""The `rune` command line: parse, build the configuration, call the library, print.

One module per group of commands; importing them registers them on `cli`.
"""

from runequeue.cli import batches, control, dashboard, failed, setup, work
from runequeue.cli.app import cli, main

__all__ = ["batches", "cli", "control", "dashboard", "failed", "main", "setup", "work"]
