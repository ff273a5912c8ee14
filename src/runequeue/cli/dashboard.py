"""`rune dashboard`: the web dashboard under uvicorn."""

from __future__ import annotations

import logging
import os

import click

from runequeue.cli.app import cli
from runequeue.cli.common import config_for
from runequeue.drivers import backend_of

log = logging.getLogger("runequeue.dashboard")

TOKEN_VARIABLE = "RUNE_DASHBOARD_TOKEN"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@cli.command("dashboard")
@click.argument("connection", required=False)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 for every interface: put TLS in front).",
)
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8400, show_default=True)
@click.option(
    "--queue",
    "queues",
    metavar="A,B",
    help="Queues to show even when no worker serves them (comma-separated).",
)
@click.option(
    "--refresh",
    type=click.FloatRange(min=0),
    default=3.0,
    show_default=True,
    help="Seconds between a page's refreshes (0: never).",
)
@click.option(
    "--proxy-headers",
    is_flag=True,
    help="Behind a TLS proxy: trust its X-Forwarded-Proto/-For (from "
    "--forwarded-allow-ips), so forms and Secure cookies see https.",
)
@click.option("--forwarded-allow-ips", default="127.0.0.1", show_default=True, metavar="IPS",
              help="Proxies whose forwarded headers are trusted (comma-separated).")  # fmt: skip
def dashboard(
    connection: str | None,
    host: str,
    port: int,
    queues: str | None,
    refresh: float,
    proxy_headers: bool,
    forwarded_allow_ips: str,
) -> None:
    """Serve the web dashboard: queues, throughput, failed jobs (retry, forget), batches,
    workers, and Prometheus /metrics.

    Every page needs the token in RUNE_DASHBOARD_TOKEN (one is made up and printed when it is
    unset): browsers log in with it, scripts send `Authorization: Bearer <token>`.

    \b
    Example:
      RUNE_DASHBOARD_TOKEN=$(openssl rand -hex 16) rune dashboard redis --port 8400
    """
    config = config_for(connection)
    if not backend_of(config).shared:
        raise click.ClickException(
            f"the {config.driver} driver keeps jobs inside one process, so there is nothing to "
            "show from here: use QUEUE_DRIVER=database or redis"
        )
    try:
        import uvicorn

        from runequeue.dashboard.asgi import app, new_token
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs its extra ({exc.name} is missing): "
            "pip install 'runequeue[dashboard]'"
        ) from exc
    token = os.environ.get(TOKEN_VARIABLE) or ""
    if not token:
        token = new_token()
        click.echo(f"dashboard token (set {TOKEN_VARIABLE} to choose one): {token}", err=True)
    if host not in LOOPBACK:
        click.echo(f"warning: listening on {host}, beyond this host; serve it behind TLS",
                   err=True)  # fmt: skip
    names = [name.strip() for name in (queues or "").split(",") if name.strip()]
    asgi = app(config, token=token, queues=names, refresh_s=refresh)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"dashboard on http://{shown}:{port}/ (Ctrl+C to stop)", err=True)
    uvicorn.run(asgi, host=host, port=port, log_level="warning", server_header=False,
                proxy_headers=proxy_headers, forwarded_allow_ips=forwarded_allow_ips)  # fmt: skip
