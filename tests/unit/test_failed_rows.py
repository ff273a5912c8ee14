"""Issue 10, items 12 and 16: a failed job's short forms for an 80-column table, and the message
that names missing tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from runequeue.errors import MissingTable
from runequeue.failed_job import FailedJob
from runequeue.schema import check_tables, migrate


def _failed(exception: str) -> FailedJob:
    return FailedJob("5e9d31b187314d4aba4005f8df30f2c6", "redis", "default", b"{}", exception)


def test_short_id_is_the_first_8_characters_of_the_uuid() -> None:
    assert _failed("").short_id == "5e9d31b1"


@pytest.mark.parametrize(
    ("exception", "line"),
    [
        ("tests.support.jobs.Boom: always fails\n\nTraceback (most recent call last):\n  ...",
         "Boom: always fails"),
        ("runequeue.errors.JobTimeout: tests.Sleepy (ab) timed out after 0.2s\n\n...",
         "JobTimeout: tests.Sleepy (ab) timed out after 0.2s"),
        ("builtins.KeyError: 'user'\n\n...", "KeyError: 'user'"),
        ("app.jobs.Empty: \n\nTraceback ...", "Empty"),
        ("not the usual shape: at all", "not the usual shape: at all"),
        ("", ""),
    ],
)  # fmt: skip
def test_exception_line_is_type_and_message_without_the_module(exception: str, line: str) -> None:
    assert _failed(exception).exception_line == line


def test_missing_tables_are_named_in_good_grammar(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()  # an empty file is an SQLite database with no tables
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(MissingTable) as both:
        check_tables(url, ["failed_jobs", "jobs"])
    assert "tables failed_jobs and jobs do not exist in " in str(both.value)
    assert str(both.value).endswith("; run `rune migrate` to create them")
    migrate(url)
    check_tables(url, ["failed_jobs", "jobs"])  # no error once they exist


def test_one_missing_table_is_named_in_the_singular(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    with pytest.raises(MissingTable, match=r"^table jobs does not exist in .*create it$"):
        check_tables(f"sqlite:///{tmp_path / 'empty.db'}", ["jobs"])
