"""The dashboard's ASGI application: routes, the credential and CSRF checks around them, and
rendering. What each page shows is in `pages`; what it reads, in `reader`."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import FormData, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runequeue.config import QueueConfig
from runequeue.dashboard import pages
from runequeue.dashboard.auth import (
    SESSION_COOKIE,
    SESSION_S,
    Authorize,
    Gate,
    csrf_ok,
    csrf_token,
    set_csrf_cookie,
)
from runequeue.dashboard.formatting import FILTERS
from runequeue.dashboard.reader import DashboardReader

log = logging.getLogger("runequeue.dashboard")

HERE = Path(__file__).parent
MAX_FORM_FIELDS = 1000  # a retry of "selected" sends one field per row shown


class Dashboard:
    """What every handler shares: the reader, the gate, and the templates."""

    def __init__(self, reader: DashboardReader, gate: Gate, *, refresh_s: float) -> None:
        self.reader = reader
        self.gate = gate
        self.refresh_s = refresh_s
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,  # payloads, errors and names are data: never markup
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters.update(FILTERS)

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> Response:
        csrf = csrf_token(request)
        html = self.templates.get_template(template).render(
            base=_base(request), path=request.url.path, csrf=csrf, refresh_s=self.refresh_s,
            has_login=self.gate.has_login, driver=self.reader.config.driver, **context,
        )  # fmt: skip
        response = HTMLResponse(html, status_code=status)
        set_csrf_cookie(
            response, csrf, secure=request.url.scheme == "https", path=_cookie_path(request)
        )
        return response


SECURITY_HEADERS = {
    # Only this app's own script and style; no frames (clickjacking), no sniffing.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class SecurityHeaders:
    """`SECURITY_HEADERS` on every response: pages, redirects, errors, ``/metrics``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


Page = Callable[[Dashboard, Request], Awaitable[Response]]
Action = Callable[[Dashboard, Request, FormData], Awaitable[Response]]


def _page(dashboard: Dashboard, handler: Page) -> Callable[[Request], Awaitable[Response]]:
    async def guarded(request: Request) -> Response:
        if not await dashboard.gate.allows(request):
            return _unauthorized(dashboard, request)
        return await handler(dashboard, request)

    return guarded


def _action(dashboard: Dashboard, handler: Action) -> Callable[[Request], Awaitable[Response]]:
    async def guarded(request: Request) -> Response:
        if not await dashboard.gate.allows(request):
            return _unauthorized(dashboard, request)
        form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
        token = form.get("csrf")
        if not dashboard.gate.bearer(request) and not csrf_ok(request, str(token or "")):
            return PlainTextResponse(
                "403: this form did not come from the dashboard (CSRF check failed); reload "
                "the page and try again", status_code=403,
            )  # fmt: skip
        return await handler(dashboard, request, form)

    return guarded


def _unauthorized(dashboard: Dashboard, request: Request) -> Response:
    """401 for scripts; for a browser, the login page itself, with the same status."""
    wants_html = "text/html" in request.headers.get("accept", "")
    if wants_html and dashboard.gate.has_login:
        return dashboard.render(request, "login.html", status=401, error="",
                                next=_local_next(request, request.url.path))  # fmt: skip
    response = PlainTextResponse(
        "401: send Authorization: Bearer <RUNE_DASHBOARD_TOKEN>, or log in", status_code=401
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="runequeue dashboard"'
    return response


async def login_page(dashboard: Dashboard, request: Request) -> Response:
    if not dashboard.gate.has_login:
        raise HTTPException(404)
    next_path = _local_next(request, request.query_params.get("next", ""))
    return dashboard.render(request, "login.html", error="", next=next_path)


async def login(dashboard: Dashboard, request: Request, form: FormData) -> Response:
    if not dashboard.gate.has_login:
        raise HTTPException(404)
    next_path = _local_next(request, str(form.get("next") or ""))
    if not dashboard.gate.token_matches(str(form.get("token") or "")):
        return dashboard.render(request, "login.html", status=401, next=next_path,
                                error="That is not the dashboard's token.")  # fmt: skip
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(SESSION_COOKIE, dashboard.gate.new_session(), max_age=SESSION_S,
                        httponly=True, samesite="strict", path=_cookie_path(request),
                        secure=request.url.scheme == "https")  # fmt: skip
    return response


async def logout(dashboard: Dashboard, request: Request, form: FormData) -> Response:
    response = RedirectResponse(f"{_base(request)}/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=_cookie_path(request))
    return response


def _open(dashboard: Dashboard, handler: Page) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        return await handler(dashboard, request)

    return handle


def _login_action(dashboard: Dashboard) -> Callable[[Request], Awaitable[Response]]:
    """The login form: CSRF-checked like every form, but open to the not yet logged in."""

    async def handle(request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=10)
        if not csrf_ok(request, str(form.get("csrf") or "")):
            return PlainTextResponse("403: reload the login page and try again", status_code=403)
        return await login(dashboard, request, form)

    return handle


def _base(request: Request) -> str:
    """Where the app is mounted ("" at the root)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _cookie_path(request: Request) -> str:
    return _base(request) or "/"


def _local_next(request: Request, wanted: str) -> str:
    """A path of this app to go to after logging in; anything else (another site, a scheme,
    ``//host``) becomes the overview, so the login page cannot redirect elsewhere."""
    base = _base(request)
    if wanted.startswith(f"{base}/") and not wanted.startswith("//") and "\\" not in wanted:
        return wanted
    return f"{base}/"


async def _not_found(request: Request, exc: Exception) -> Response:
    detail = exc.detail if isinstance(exc, HTTPException) else "Not found"
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    return PlainTextResponse(f"{status}: {detail}", status_code=status)


async def _server_error(request: Request, exc: Exception) -> Response:
    """Whatever went wrong is logged here, never shown: a traceback may hold secrets."""
    log.error("dashboard: %s %s failed", request.method, request.url.path, exc_info=exc)
    return PlainTextResponse(
        "500: the dashboard could not answer (is the backend reachable?); the server log says "
        "why", status_code=500,
    )  # fmt: skip


def app(
    config: QueueConfig,
    *,
    token: str | None = None,
    authorize: Authorize | None = None,
    queues: Sequence[str] = (),
    refresh_s: float = 3.0,
) -> Starlette:
    """The dashboard as an ASGI app, to serve (``rune dashboard``) or to mount in an existing
    Starlette or FastAPI application: ``Mount("/queues", app=dashboard.app(config, ...))``.

    Args:
        config: the backend to show.
        token: the credential people and scripts give (``Authorization: Bearer``, or the login
            page). Needed unless ``authorize`` is given.
        authorize: instead of the token, the host application decides: called with each
            request, it returns (or awaits to) whether to let it in, e.g. from the
            application's own session. Forms are still CSRF-checked.
        queues: queues to show even when no worker serves them.
        refresh_s: how often pages refresh themselves.
    """
    reader = DashboardReader(config, queues=queues)
    dashboard = Dashboard(reader, Gate(token, authorize), refresh_s=refresh_s)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await reader.close()

    routes = [
        Route("/login", _open(dashboard, login_page), methods=["GET"]),
        Route("/login", _login_action(dashboard), methods=["POST"]),
        Route("/logout", _action(dashboard, logout), methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    for path, handler in pages.PAGES.items():
        routes.append(Route(path, _page(dashboard, handler), methods=["GET"]))
    for path, action in pages.ACTIONS.items():
        routes.append(Route(path, _action(dashboard, action), methods=["POST"]))
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={HTTPException: _not_found, Exception: _server_error},
    )


def new_token() -> str:
    return secrets.token_urlsafe(24)
