"""What a new user meets at the command line (issue 10): `.env`, job modules, the application's
logging, one-line errors, the failed-jobs table at 80 columns, and the demo's own advice.

Each test runs `rune` as a user would: a subprocess in a project directory of its own.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import redis

from runequeue.schema import migrate

SRC = Path(__file__).resolve().parents[2] / "src"


def rune(
    project: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`rune ARGS` in ``project`` with none of the caller's queue settings."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QUEUE_", "DATABASE_URL", "REDIS_URL", "RUNE_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "runequeue", *args],
        cwd=project, env={**base, "COLUMNS": "80", **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def write_module(project: Path, name: str, source: str) -> None:
    (project / f"{name}.py").write_text(textwrap.dedent(source))


JOBS = """
    import dataclasses
    import logging
    from runequeue import Job

    @dataclasses.dataclass
    class Hello(Job, name="app.Hello"):
        who: str

        async def handle(self) -> None:
            logging.getLogger("app.jobs").info("hello %s", self.who)
            with open("ran.txt", "a") as out:
                out.write(self.who + "\\n")

    @dataclasses.dataclass
    class Declines(Job, name="app.Declines"):
        order: int
        tries = 1

        def handle(self) -> None:
            raise ValueError(f"card declined for order {self.order}: " + "x" * 300)
    """

DISPATCH = """
    import sys
    from runequeue import Queue, QueueConfig
    import app_jobs
    config = QueueConfig.from_env()
    for who in sys.argv[1:]:
        job = app_jobs.Declines(order=7) if who == "declines" else app_jobs.Hello(who=who)
        try:
            Queue.dispatch(config, job)
        except ValueError:
            pass
    """


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An application directory: a job module, a dispatch script and a migrated SQLite file."""
    write_module(tmp_path, "app_jobs", JOBS)
    write_module(tmp_path, "dispatch", DISPATCH)
    migrate(f"sqlite:///{tmp_path / 'runequeue.sqlite3'}")
    return tmp_path


def dispatch(project: Path, *who: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        [sys.executable, "dispatch.py", *who], cwd=project, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


# Item 2: a worker that knows no job classes refuses to start; RUNE_IMPORTS in .env counts.


def test_a_worker_without_job_modules_refuses_to_start_and_keeps_the_job(project: Path) -> None:
    dispatch(project, "ada", env={"QUEUE_DRIVER": "database"})
    done = rune(project, "queue:work", "database", "--stop-when-empty")
    assert done.returncode != 0
    assert "--import" in done.stderr and "RUNE_IMPORTS" in done.stderr
    assert "Traceback" not in done.stderr
    assert rune(project, "queue:size", "database").stdout.strip() == "default: 1"


def test_import_flags_win_over_rune_imports(project: Path) -> None:
    (project / ".env").write_text("QUEUE_DRIVER=database\nRUNE_IMPORTS=no_such_module\n")
    dispatch(project, "ada")
    done = rune(project, "queue:work", "--import", "app_jobs", "--stop-when-empty")
    assert done.returncode == 0, done.stderr
    line = one_line_error(rune(project, "queue:work", "--stop-when-empty"))
    assert "'no_such_module' (from RUNE_IMPORTS)" in line


def test_rune_imports_and_the_driver_are_read_from_dotenv(project: Path) -> None:
    (project / ".env").write_text("QUEUE_DRIVER=database\nRUNE_IMPORTS=app_jobs\n")
    dispatch(project, "ada", "grace")
    done = rune(project, "queue:work", "--stop-when-empty")
    assert done.returncode == 0, done.stderr
    assert (project / "ran.txt").read_text().split() == ["ada", "grace"]


# Item 5: failed sync jobs are retried with the job modules named; --database-url everywhere.


def test_a_failed_sync_job_is_retried_with_import_and_an_explicit_database(project: Path) -> None:
    dispatch(project, "declines", env={"QUEUE_DRIVER": "sync"})
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    url = f"sqlite:///{project / 'runequeue.sqlite3'}"
    listed = rune(elsewhere, "queue:failed", "--json", "--database-url", url)
    assert listed.returncode == 0, listed.stderr
    assert '"job":"app.Declines"' in listed.stdout

    without = rune(project, "queue:retry", "1")
    assert without.returncode == 1
    assert "--import" in without.stdout
    kept = rune(project, "queue:failed", "1")
    assert "ValueError: card declined for order 7" in kept.stdout  # not replaced by UnknownJob

    again = rune(project, "queue:retry", "1", "--import", "app_jobs", "--database-url", url)
    assert again.returncode == 1  # it ran, and failed again
    assert "failed again" in again.stdout and "card declined" in again.stdout


# Item 8: the worker leaves the application's logging alone, or follows --log-config.

LOGGING_JOBS = """
    import logging
    handler = logging.FileHandler("app.log")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    from app_jobs import Hello
    """


def test_the_worker_keeps_the_applications_logging(project: Path) -> None:
    write_module(project, "logging_jobs", LOGGING_JOBS)
    dispatch(project, "ada", env={"QUEUE_DRIVER": "database"})
    done = rune(project, "queue:work", "database", "--import", "logging_jobs", "--stop-when-empty")
    assert done.returncode == 0, done.stderr
    log = (project / "app.log").read_text()
    assert "INFO app.jobs hello ada" in log
    assert re.search(r"DONE  app\.Hello", done.stdout)  # runequeue's own line, on stdout


def test_log_config_configures_every_logger(project: Path) -> None:
    (project / "logging.ini").write_text(
        textwrap.dedent("""
        [loggers]
        keys=root
        [handlers]
        keys=file
        [formatters]
        keys=plain
        [logger_root]
        level=INFO
        handlers=file
        [handler_file]
        class=FileHandler
        formatter=plain
        args=("all.log",)
        [formatter_plain]
        format=%(levelname)s %(name)s %(message)s
        """)
    )
    dispatch(project, "ada", env={"QUEUE_DRIVER": "database"})
    done = rune(
        project, "queue:work", "database", "--import", "app_jobs", "--stop-when-empty",
        "--log-config", "logging.ini",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    log = (project / "all.log").read_text()
    assert "INFO app.jobs hello ada" in log
    assert "INFO runequeue.worker DONE  app.Hello" in log

    # `rune -v` still asks for runequeue's DEBUG lines (the tracebacks of failed attempts).
    dispatch(project, "declines", env={"QUEUE_DRIVER": "database"})
    done = rune(
        project, "-v", "queue:work", "database", "--import", "app_jobs", "--stop-when-empty",
        "--log-config", "logging.ini",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "DEBUG runequeue.worker" in (project / "all.log").read_text()


# Item 11: every CLI error is one line and a non-zero exit; the traceback only with -v.

DUPLICATES = """
    import dataclasses
    from runequeue import Job

    @dataclasses.dataclass
    class One(Job, name="same"):
        async def handle(self) -> None: ...

    @dataclasses.dataclass
    class Two(Job, name="same"):
        async def handle(self) -> None: ...
    """


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_cli_errors_are_one_line(project: Path) -> None:
    write_module(project, "duplicates", DUPLICATES)
    line = one_line_error(rune(project, "queue:work", "database", "--import", "duplicates"))
    assert "'same'" in line and "name=" in line
    line = one_line_error(rune(project, "queue:work", "database", "--concurrency", "0"))
    assert "--concurrency" in line
    line = one_line_error(rune(project, "queue:work", "database", "--import", "no_such_module"))
    assert "no_such_module" in line and "(from --import)" in line
    write_module(project, "needs_a_package", "import not_installed_package\n")
    line = one_line_error(rune(project, "queue:work", "database", "--import", "needs_a_package"))
    assert "imports 'not_installed_package', which is not installed" in line
    line = one_line_error(rune(project, "queue:work", "--import", "app_jobs"))  # sync: no queue
    assert "QUEUE_DRIVER=database" in line
    line = one_line_error(rune(project, "queue:work", "database", "--backoff", "soon"))
    assert "--backoff" in line
    line = one_line_error(rune(project, "queue:size", "redis", env={"REDIS_URL": "http://x"}))
    assert "REDIS_URL" in line and "redis://" in line
    line = one_line_error(rune(project, "queue:failed", env={"QUEUE_MAX_PAYLOAD_BYTES": "lots"}))
    assert "QUEUE_MAX_PAYLOAD_BYTES" in line


def test_verbose_shows_the_traceback(project: Path) -> None:
    write_module(project, "duplicates", DUPLICATES)
    done = rune(project, "-v", "queue:work", "database", "--import", "duplicates")
    assert done.returncode != 0
    assert "Traceback" in done.stderr


def test_postgres_urls_are_accepted(postgresql_database: str, tmp_path: Path) -> None:
    url = postgresql_database.replace("postgresql://", "postgres://", 1)
    done = rune(tmp_path, "migrate", "--database-url", url)
    assert done.returncode == 0, done.stderr
    assert rune(tmp_path, "queue:failed", env={"DATABASE_URL": url}).returncode == 0


# Item 12: the failed-jobs table fits 80 columns, and one job can be read in full.


def test_failed_jobs_fit_80_columns_and_show_in_full(project: Path) -> None:
    dispatch(project, "declines", "declines", env={"QUEUE_DRIVER": "sync"})
    table = rune(project, "queue:failed")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    rows = [line for line in lines if "app.Declines" in line]
    assert len(rows) == 2  # one line each: nothing wraps
    assert all("ValueError: card" in row for row in rows)

    short_uuid = rows[0].split()[1]
    detail = rune(project, "queue:failed", short_uuid)
    assert detail.returncode == 0, detail.stderr
    assert '"order": 7' in detail.stdout  # the payload, pretty-printed
    assert "Traceback (most recent call last)" in detail.stdout
    assert "x" * 300 in detail.stdout  # the whole message


# Item 13: every command `rune demo` suggests runs as printed.


def suggested_commands(output: str, rune_script: str) -> list[list[str]]:
    """Every command the demo printed (``$ CMD`` or an indented ``CMD  # why``), as argv."""
    commands = []
    for line in output.splitlines():
        text = line.removeprefix("$ ").strip()
        if line.startswith(("$ ", "  ")) and text.startswith(f"{rune_script} "):
            commands.append(shlex.split(text.split("  #")[0].split("  (")[0]))
    return commands


@pytest.mark.parametrize("driver", ["database", "redis", "sync"])
def test_the_demos_commands_run_as_printed(driver: str, tmp_path: Path, redis_url: str) -> None:
    # Run as the README does, `.venv/bin/rune demo`, with the virtualenv not activated: what it
    # prints must run as printed all the same.
    rune_script = str(Path(sys.executable).parent / "rune")
    path = os.pathsep.join(
        part
        for part in os.environ["PATH"].split(os.pathsep)
        if Path(part) != Path(rune_script).parent
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "DATABASE_URL"))},
        "PATH": path,
        "COLUMNS": "80",
        "QUEUE_REDIS_PREFIX": f"rqtest-demo-{uuid.uuid4().hex[:8]}",
        "REDIS_URL": redis_url,
    }

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    try:
        demo = run([rune_script, "demo", "--driver", driver])
        assert demo.returncode == 0, demo.stdout + demo.stderr
        commands = suggested_commands(demo.stdout, rune_script)
        assert any("queue:retry" in command for command in commands), demo.stdout
        for command in commands:
            done = run(command)
            output = done.stdout + done.stderr
            if driver == "sync" and "queue:retry" in command:
                # A sync retry runs the job here and now: it declines again, and says so.
                assert "failed again" in output and "card declined" in output, output
            else:
                assert done.returncode == 0, f"{command}: {output}"
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{env['QUEUE_REDIS_PREFIX']}:*"))
        if keys:
            client.delete(*keys)
        client.close()


# Items 16 and 17: exit codes, help texts.


def test_retrying_or_forgetting_an_unknown_id_exits_non_zero(project: Path) -> None:
    assert rune(project, "queue:retry", "99999").returncode == 1
    assert rune(project, "queue:forget", "99999").returncode == 1
    line = one_line_error(rune(project, "queue:failed", "81de"))
    assert "8 or more characters" in line
    assert "missing deadbeef0 " in rune(project, "queue:retry", "deadbeef0").stdout  # as typed


def test_piped_failed_jobs_are_not_cut_to_a_terminal(project: Path) -> None:
    dispatch(project, "declines", env={"QUEUE_DRIVER": "sync"})
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "DATABASE_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "runequeue", "queue:failed"], cwd=project, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "x" * 300 in done.stdout


def test_read_only_commands_do_not_create_a_database(tmp_path: Path) -> None:
    done = rune(tmp_path, "queue:failed")
    assert done.returncode != 0
    assert "rune migrate" in done.stderr
    assert not (tmp_path / "runequeue.sqlite3").exists()


COMMANDS = [
    "queue:work", "queue:size", "queue:clear", "queue:failed", "queue:retry", "queue:forget",
    "queue:flush", "queue:prune-failed", "migrate", "demo",
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_an_example(command: str, tmp_path: Path) -> None:
    done = rune(tmp_path, command, "--help")
    assert done.returncode == 0
    assert re.search(r"Examples?:\n\s+rune ", done.stdout), done.stdout


def test_migrate_help_names_both_tables(tmp_path: Path) -> None:
    text = " ".join(rune(tmp_path, "migrate", "--help").stdout.split())
    assert "`jobs`" in text and "`failed_jobs`" in text


def test_work_help_says_what_it_needs(tmp_path: Path) -> None:
    text = " ".join(rune(tmp_path, "queue:work", "--help").stdout.split())
    for needed in ("`redis` or `database`", "RUNE_IMPORTS", "0 means no timeout", "QUEUE_NAME"):
        assert needed in text
