"""The Django app: imports each installed app's ``jobs`` module once Django is ready."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class RuneQueueConfig(AppConfig):  # type: ignore[misc]  # Django ships no types
    name = "runequeue.integrations.django"
    label = "runequeue"
    verbose_name = "runequeue"

    def ready(self) -> None:
        autodiscover_modules("jobs")
