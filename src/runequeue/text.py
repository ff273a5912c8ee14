"""Text for one line of output: error messages, log lines, CLI errors."""

from __future__ import annotations


def one_line(text: object) -> str:
    """``text`` with every run of whitespace, newlines included, as one space.

    Database drivers put DETAIL and HINT on lines of their own, and exception messages may hold
    anything: a log line or a CLI error must stay one line.
    """
    return " ".join(safe_str(text).split())


def safe_str(value: object) -> str:
    """``str(value)``, or a stand-in naming its type when its ``__str__`` raises.

    An exception's text is the user's code: a ``__str__`` that raises must not take the worker's
    logging, or the failure record, down with it.
    """
    try:
        return str(value)
    except BaseException:
        return f"<{type(value).__qualname__}: str() raised>"
