"""`rune dashboard` as a person starts it: a token made up and printed when none is set, the
pages behind it, loopback by default; and a clear refusal on a driver with nothing to show."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from runequeue import QueueConfig
from tests.workers import ROOT, wait_until


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:  # not listening yet: it prints its address first
        return 0


def test_a_token_is_made_up_and_printed(config: QueueConfig, tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RUNE_DASHBOARD_TOKEN"}
    env |= {
        "QUEUE_DRIVER": "redis", "REDIS_URL": config.redis_url,
        "QUEUE_REDIS_PREFIX": config.redis_prefix, "DATABASE_URL": config.database_url,
    }  # fmt: skip
    log = tmp_path / "dashboard.log"
    with open(log, "wb") as out:
        command = [sys.executable, "-m", "runequeue", "dashboard", "--port", str(port)]
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        wait_until(lambda: "dashboard on" in log.read_text(), what="the dashboard to start")
        text = log.read_text()
        found = re.search(
            r"dashboard token \(set RUNE_DASHBOARD_TOKEN to choose one\): (\S+)", text
        )
        assert found, text
        assert f"http://127.0.0.1:{port}/" in text  # loopback unless told otherwise
        url = f"http://127.0.0.1:{port}/"
        wait_until(lambda: _status(url, found.group(1)) == 200, what="the overview")
        assert _status(url, None) == 401
        assert _status(url, "not-it") == 401
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_sync_driver_is_refused_with_what_to_do(tmp_path: Path) -> None:
    env = {**os.environ, "QUEUE_DRIVER": "sync"}
    done = subprocess.run([sys.executable, "-m", "runequeue", "dashboard"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 1
    assert "set QUEUE_DRIVER=database (or redis)" in done.stderr
