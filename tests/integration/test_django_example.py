"""The Django example project, as its README section runs it: runequeue's tables in Django's
database, jobs found in the app's jobs.py, a receipt dispatched after the order's commit and
never for a rolled-back one, and a worker started with manage.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runequeue import QueueConfig
from tests.workers import ROOT

PROJECT = ROOT / "examples" / "django_app"


def manage(config: QueueConfig, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXAMPLE_DB": str(db), "QUEUE_DRIVER": "redis",
           "REDIS_URL": config.redis_url, "QUEUE_REDIS_PREFIX": config.redis_prefix}  # fmt: skip
    env.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_the_django_example(config: QueueConfig, tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite3"
    migrated = manage(config, db, "rune", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "failed_jobs" in migrated.stdout and str(db) in migrated.stdout  # Django's database

    placed = manage(config, db, "shell", "-c", "from shop.orders import place_order\n"
                    "place_order(7)\ntry:\n    place_order(8, fail=True)\nexcept RuntimeError:\n"
                    "    pass")  # fmt: skip
    assert placed.returncode == 0, placed.stderr
    assert manage(config, db, "rune", "queue:size").stdout == "default: 1\n"  # 8 rolled back

    worked = manage(config, db, "rune", "queue:work", "--stop-when-empty")
    assert worked.returncode == 0, worked.stderr
    assert "DONE  shop.SendReceipt" in worked.stderr + worked.stdout
