"""Settings of the example project: runequeue's app installed, jobs on Redis (or whatever
QUEUE_DRIVER says), failed jobs in Django's own database."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["shop", "runequeue.integrations.django"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB", str(BASE_DIR / "db.sqlite3")),
    }
}
# QueueConfig fields over the environment's (QUEUE_DRIVER, REDIS_URL, QUEUE_REDIS_PREFIX...).
RUNEQUEUE = {"queue_name": "default"}
