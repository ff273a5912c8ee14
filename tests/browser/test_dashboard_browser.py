"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright with
``executable_path``: nothing is downloaded): log in, watch a queue's depth change as jobs are
dispatched, retry a failed job from the page and see it complete.

With ``RUNE_SCREENSHOTS=<dir>`` the pages are also saved there (docs/images holds the README's).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from runequeue import Queue, QueueConfig
from tests.support.jobs import FailsUntilFixed, Record, read_events
from tests.workers import ROOT, spawn_worker, wait_until

TOKEN = "browser-test-token"
# Chromium as root in a sandbox-less container, with nothing reaching out to the internet.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]  # fmt: skip


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "Chromium is not installed: apt-get install -y chromium (see README)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dashboard(config: QueueConfig, tmp_path: Path) -> Iterator[str]:
    """``rune dashboard`` on a free loopback port, refreshing pages every second."""
    port = _free_port()
    env = {**os.environ, "QUEUE_DRIVER": config.driver, "REDIS_URL": config.redis_url,
           "QUEUE_REDIS_PREFIX": config.redis_prefix, "DATABASE_URL": config.database_url,
           "RUNE_DASHBOARD_TOKEN": TOKEN}  # fmt: skip
    command = [sys.executable, "-m", "runequeue", "dashboard", "--port", str(port),
               "--refresh", "1"]  # fmt: skip
    with open(tmp_path / "dashboard.log", "wb") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        wait_until(lambda: _listening(port), what="the dashboard to listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def browser() -> Iterator[Browser]:
    executable = _chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _shoot(page: Page, name: str, tmp_path: Path) -> None:
    page.screenshot(path=tmp_path / f"{name}.png", full_page=True)
    wanted = os.environ.get("RUNE_SCREENSHOTS")
    if wanted:
        page.screenshot(path=Path(wanted) / f"dashboard-{name}.png", full_page=True)


def test_log_in_watch_a_queue_and_retry_a_failed_job(
    config: QueueConfig, dashboard: str, browser: Browser, tmp_path: Path
) -> None:
    ledger, fix = tmp_path / "ledger", tmp_path / "fixed"
    page = browser.new_page(viewport={"width": 1280, "height": 900})

    page.goto(f"{dashboard}/")
    expect(page.get_by_label("Token")).to_be_visible()  # every page needs the token
    page.get_by_label("Token").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not the dashboard")
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()

    ready = page.locator('tr[data-queue="default"] td.ready')
    expect(ready).to_have_text("0")
    Queue.dispatch_many(config, [Record(str(ledger)) for _ in range(3)])
    Queue.dispatch(config, FailsUntilFixed(str(ledger), str(fix)))
    expect(ready).to_have_text("4", timeout=15_000)  # the page refreshed by itself

    worker = spawn_worker(config, "--sleep", "0.2", log=tmp_path / "worker.log")
    try:
        expect(ready).to_have_text("0", timeout=20_000)
        expect(page.locator("#done-hour")).to_have_text("3", timeout=20_000)  # published
        _shoot(page, "overview", tmp_path)

        page.get_by_role("link", name="Failed jobs").first.click()
        row = page.locator("table.failed tbody tr")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("Boom: not fixed yet")
        _shoot(page, "failed", tmp_path)
        row.locator("a").click()  # the job's page: payload and traceback
        expect(page.locator("pre.traceback")).to_contain_text("Traceback")
        expect(page.locator("pre.payload")).to_contain_text('"job": "tests.FailsUntilFixed"')
        _shoot(page, "job", tmp_path)
        page.go_back()

        fix.touch()  # the bug is fixed: retry it from the page
        page.locator("table.failed tbody tr input[type=checkbox]").check()
        page.get_by_role("button", name="Retry selected").click()
        expect(page.get_by_role("status")).to_contain_text("1 job(s) queued again")
        wait_until(lambda: _ran_to_done(ledger), what="the retried job to run")
        page.goto(f"{dashboard}/queues/default")
        recent = page.locator("table.recent")
        expect(recent).to_contain_text("tests.FailsUntilFixed", timeout=20_000)
        ran = recent.locator("tr", has_text="tests.FailsUntilFixed").filter(has_text="done")
        expect(ran).to_have_count(1, timeout=20_000)  # published within a flush (5 s)
        _shoot(page, "queue", tmp_path)
        page.goto(f"{dashboard}/workers")
        expect(page.locator("table.workers tbody tr")).to_have_count(1)
        _shoot(page, "workers", tmp_path)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def _ran_to_done(ledger: Path) -> bool:
    """Whether the job that failed (the one that noted a start) has now noted done."""
    failing = _fails_id(ledger)
    return any(e.event == "done" and e.job_id == failing for e in read_events(ledger))


def _fails_id(ledger: Path) -> str:
    starts = [e for e in read_events(ledger) if e.event == "start"]
    return starts[0].job_id if starts else ""
