"""runequeue in a Flask app: its configuration from ``app.config``, a ``dispatch`` that uses
it, and the ``flask rune ...`` commands::

    from flask import Flask
    from runequeue.integrations.flask import RuneQueue

    app = Flask(__name__)
    app.config["RUNEQUEUE"] = {"driver": "redis", "redis_url": "redis://127.0.0.1:6379/0"}
    queue = RuneQueue(app)           # or queue = RuneQueue(); queue.init_app(app)

    @app.post("/signup")
    def signup():
        return {"queued": queue.dispatch(SendWelcomeEmail(request.form["email"]))}

``app.config["RUNEQUEUE"]`` holds `QueueConfig` fields over the environment's (``QUEUE_DRIVER``,
``REDIS_URL``...), so either works. ``flask rune queue:work --import myapp.jobs`` (and every
other ``rune`` command) runs with the app's configuration.
"""

from __future__ import annotations

from typing import Unpack

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from runequeue.config import QueueConfig
from runequeue.job import Job
from runequeue.queue import DispatchOptions, Queue

EXTENSION = "runequeue"


class RuneQueue:
    """The Flask extension."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        settings = dict(app.config.get("RUNEQUEUE") or {})
        app.extensions[EXTENSION] = QueueConfig.from_env(**settings)
        app.cli.add_command(_rune_command())

    @property
    def config(self) -> QueueConfig:
        """The current app's queue configuration."""
        config = current_app.extensions.get(EXTENSION)
        if not isinstance(config, QueueConfig):
            raise RuntimeError("RuneQueue is not set up on this app: RuneQueue(app)")
        return config

    def dispatch(self, job: Job, **options: Unpack[DispatchOptions]) -> str:
        """`Queue.dispatch` on the current app's configuration."""
        return Queue.dispatch(self.config, job, **options)


def _rune_command() -> click.Command:
    @click.command(
        "rune",
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    @with_appcontext
    def rune(args: tuple[str, ...]) -> None:
        """runequeue's commands on this app's configuration (flask rune --help)."""
        from runequeue.cli.app import cli
        from runequeue.cli.common import configured_by

        with configured_by(current_app.extensions[EXTENSION]):
            cli.main(args=list(args), prog_name="flask rune")

    return rune
