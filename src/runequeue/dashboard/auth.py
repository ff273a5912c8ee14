"""Who may use the dashboard, and proof that a form was sent from it.

- A request is let in by ``Authorization: Bearer <token>`` (scripts), by the session cookie the
  login page sets once given the token (browsers: HttpOnly, SameSite=Strict, signed with a key
  derived from the token, so changing the token ends every session), or, when the app is mounted
  in another application, by that application's ``authorize`` callable instead.
- Every state-changing request is a POST that must carry the ``csrf`` form field equal to the
  ``rune_csrf`` cookie (double submit; the cookie is SameSite=Strict, so another site cannot
  send it) and, if the browser says where it comes from (``Origin``), come from this host.
  Requests with a bearer token carry no ambient credential, so they need neither.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import secrets
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

Authorize = Callable[[Request], bool | Awaitable[bool]]

SESSION_COOKIE = "rune_session"
CSRF_COOKIE = "rune_csrf"
SESSION_S = 12 * 3600


class Gate:
    """The dashboard's credential checks: a token, or an application's ``authorize``."""

    def __init__(self, token: str | None, authorize: Authorize | None) -> None:
        if not token and authorize is None:
            raise ValueError("the dashboard needs a token or an authorize callable")
        self.token = token
        self.authorize = authorize
        self._key = hashlib.sha256(b"runequeue-dashboard-session:" + (token or "").encode())

    @property
    def has_login(self) -> bool:
        """Whether people log in with the token (not when the host application decides)."""
        return self.authorize is None

    def bearer(self, request: Request) -> bool:
        """Whether the request carries the token as ``Authorization: Bearer``."""
        given = request.headers.get("authorization", "")
        return bool(self.token) and _same(given, f"Bearer {self.token}")

    async def allows(self, request: Request) -> bool:
        if self.bearer(request):
            return True
        if self.authorize is not None:
            verdict = self.authorize(request)
            return bool(await verdict) if inspect.isawaitable(verdict) else bool(verdict)
        return self._valid_session(request.cookies.get(SESSION_COOKIE, ""))

    def token_matches(self, given: str) -> bool:
        return bool(self.token) and _same(given.strip(), self.token or "")

    def new_session(self) -> str:
        expires = str(int(time.time()) + SESSION_S)
        return f"{expires}.{self._sign(expires)}"

    def _valid_session(self, cookie: str) -> bool:
        expires, _, signature = cookie.partition(".")
        if not expires.isdigit() or not _same(signature, self._sign(expires)):
            return False
        return int(expires) > time.time()

    def _sign(self, value: str) -> str:
        return hmac.new(self._key.digest(), value.encode(), hashlib.sha256).hexdigest()


def csrf_token(request: Request) -> str:
    """The request's CSRF token: its cookie's, or a new one (`set_csrf_cookie` stores it)."""
    given = request.cookies.get(CSRF_COOKIE, "")
    return given if len(given) == 43 and given.isascii() else secrets.token_urlsafe(32)


def set_csrf_cookie(response: Response, token: str, *, secure: bool, path: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure,
                        path=path)  # fmt: skip


def csrf_ok(request: Request, form_token: str) -> bool:
    """Whether a POST comes from one of the dashboard's own forms."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not _same(cookie, form_token):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None  # a privacy-stripped "null" origin is refused
    return origin == f"{request.url.scheme}://{request.url.netloc}"


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())
