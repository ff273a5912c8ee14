"""Text for one line of output: error messages, log lines, CLI errors."""

from __future__ import annotations


def one_line(text: object) -> str:
    """``text`` with every run of whitespace, newlines included, as one space.

    Database drivers put DETAIL and HINT on lines of their own, and exception messages may hold
    anything: a log line or a CLI error must stay one line.
    """
    return " ".join(str(text).split())
