"""The dashboard over HTTP (Starlette's test client, a real backend): every page behind the
token, login and its cookies, CSRF on every form, escaping, bad input answered plainly, and
the app mounted in another application with its own authorization."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from starlette.testclient import TestClient

from runequeue import Queue, QueueConfig
from runequeue.dashboard import app
from runequeue.failed_job import FailedJob
from runequeue.failed_store import FailedJobStore
from runequeue.payload import new_job_id
from tests.support.jobs import Record

TOKEN = "s3cret-token"
PAGES = ["/", "/queues", "/queues/default", "/failed", "/batches", "/workers", "/metrics"]
EVIL = "<script>alert('owned')</script>"


@pytest.fixture
def client(config: QueueConfig) -> Iterator[TestClient]:
    with TestClient(app(config, token=TOKEN), base_url="http://127.0.0.1:8400") as client:
        yield client


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fail(config: QueueConfig, payload: bytes, exception: str = "app.Boom: no") -> FailedJob:
    """Store a failed job as a worker would, and return it with its row id."""
    store = FailedJobStore(config.database_url)
    try:
        job = FailedJob(new_job_id(), config.driver, "default", payload, exception)
        store.record(job)
        (row,) = store.find(store.row_ids_of(job.job_id))
        return row
    finally:
        store.close()


def record_payload(ledger: str, **extra: str) -> bytes:
    fields = ",".join([f'"ledger":"{ledger}"', *(f'"{k}":"{v}"' for k, v in extra.items())])
    return (f'{{"v":3,"id":"{new_job_id()}","job":"tests.Record","data":{{{fields}}},'
            '"queue":"default","created_at":1}').encode()  # fmt: skip


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def log_in(client: TestClient) -> str:
    """Log in through the form; the CSRF token of the session's pages."""
    page = client.get("/login")
    reply = client.post("/login", data={"token": TOKEN, "csrf": csrf_of(page.text), "next": "/"},
                        follow_redirects=False)  # fmt: skip
    assert reply.status_code == 303
    return csrf_of(client.get("/").text)


def test_every_page_needs_the_token(client: TestClient) -> None:
    for path in PAGES:
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=bearer("wrong")).status_code == 401, path
        assert client.get(path, headers={"Authorization": "Bearer"}).status_code == 401, path
        assert client.get(path, headers=bearer()).status_code == 200, path
    page = client.get("/failed", headers={"Accept": "text/html"})
    assert page.status_code == 401 and 'name="token"' in page.text  # a browser gets the login
    assert client.post("/failed/retry", data={"all": "1"}).status_code == 401


def test_login_sets_a_strict_http_only_session(client: TestClient) -> None:
    page = client.get("/login")
    wrong = client.post("/login", data={"token": "nope", "csrf": csrf_of(page.text)})
    assert wrong.status_code == 401 and "not the dashboard&#39;s token" in wrong.text
    reply = client.post("/login", follow_redirects=False, data={
        "token": TOKEN, "csrf": csrf_of(page.text), "next": "https://evil.example/"})  # fmt: skip
    assert reply.status_code == 303 and reply.headers["location"] == "/"  # no open redirect
    cookie = next(c for c in reply.headers.get_list("set-cookie") if c.startswith("rune_session"))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get("/").status_code == 200
    client.post("/logout", data={"csrf": csrf_of(client.get("/").text)})
    assert client.get("/").status_code == 401


def test_forged_and_cross_site_posts_are_refused(client: TestClient, config: QueueConfig) -> None:
    row = fail(config, record_payload("/dev/null"))
    csrf = log_in(client)
    assert client.post("/failed/forget", data={"id": str(row.id)}).status_code == 403
    assert client.post("/failed/forget", data={"id": str(row.id), "csrf": "forged"}).status_code \
        == 403  # fmt: skip
    cross_site = client.post("/failed/forget", data={"id": str(row.id), "csrf": csrf},
                             headers={"Origin": "https://evil.example"})  # fmt: skip
    assert cross_site.status_code == 403
    assert client.post("/queues/default/pause", data={}).status_code == 403
    same_site = {"Origin": "http://127.0.0.1:8400"}
    ok = client.post("/failed/forget", data={"id": str(row.id), "csrf": csrf}, headers=same_site,
                     follow_redirects=False)  # fmt: skip
    assert ok.status_code == 303 and "1%20failed%20job" in ok.headers["location"]
    replayed = client.post("/failed/forget", data={"id": str(row.id), "csrf": csrf})
    assert replayed.status_code == 200 and "already gone" in replayed.text


def test_payloads_and_errors_render_inert(client: TestClient, config: QueueConfig) -> None:
    row = fail(config, record_payload("/dev/null", note=EVIL), exception=f"app.Boom: {EVIL}")
    for path in ["/failed", f"/jobs/{row.job_id}", f"/failed?q={EVIL}"]:
        page = client.get(path, headers=bearer())
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text, path
    detail = client.get(f"/jobs/{row.job_id}", headers=bearer()).text
    assert "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in detail
    assert "&#34;note&#34;: &#34;&lt;script&gt;" in detail  # pretty-printed JSON, escaped
    assert (
        client.get("/", headers=bearer())
        .headers["Content-Security-Policy"]
        .startswith("default-src 'self'")
    )


def test_bad_input_gets_a_plain_answer(client: TestClient, config: QueueConfig) -> None:
    huge = fail(config, record_payload("x" * (1024 * 1024)))
    binary = fail(config, b"\xff\xfe\x00binary\x80")
    assert client.get(f"/jobs/{huge.job_id}", headers=bearer()).status_code == 200
    page = client.get(f"/jobs/{binary.job_id}", headers=bearer())
    assert page.status_code == 200 and "\\xff\\xfe" in page.text
    missing = client.get("/jobs/0123456789abcdef", headers=bearer())
    assert missing.status_code == 404 and "no failed or recent job" in missing.text
    assert client.get("/failed?page=abc", headers=bearer()).status_code == 400
    assert client.get("/failed?q=" + "x" * 500, headers=bearer()).status_code == 400
    assert client.post("/failed/retry", data={"id": "1; drop"}, headers=bearer()).status_code \
        == 400  # fmt: skip
    gone = client.post("/failed/retry", data={"id": "999999"}, headers=bearer())
    assert gone.status_code == 200 and "no longer failed" in gone.text


def test_metrics_and_pause(client: TestClient, config: QueueConfig, tmp_path: Path) -> None:
    Queue.dispatch_many(config, [Record(str(tmp_path / "l")) for _ in range(3)])
    text = client.get("/metrics", headers=bearer()).text
    assert 'runequeue_queue_size{queue="default",state="ready"} 3.0' in text
    assert "runequeue_workers 0.0" in text
    client.post("/queues/default/pause", headers=bearer())
    assert "paused" in client.get("/queues", headers=bearer()).text
    client.post("/queues/default/resume", headers=bearer())
    assert "Resume</button>" not in client.get("/queues", headers=bearer()).text


def test_no_secret_is_rendered(config: QueueConfig) -> None:
    secret = dataclasses.replace(config, signing_keys=(("k1", "k" * 32),))
    with TestClient(app(secret, token=TOKEN)) as client:
        for path in PAGES:
            text = client.get(path, headers=bearer()).text
            for value in (TOKEN, "k" * 32, config.redis_url, config.database_url):
                assert value not in text, (path, value)


def test_an_unreachable_backend_is_a_500_without_a_traceback(config: QueueConfig) -> None:
    away = dataclasses.replace(config, redis_url="redis://127.0.0.1:1/0")
    with TestClient(app(away, token=TOKEN), raise_server_exceptions=False) as client:
        reply = client.get("/", headers=bearer())
    assert reply.status_code == 500 and "could not answer" in reply.text
    assert "Traceback" not in reply.text and "127.0.0.1:1" not in reply.text


def test_mounted_in_an_application_with_its_own_authorization(config: QueueConfig) -> None:
    def admins_only(request: Request) -> bool:
        return request.headers.get("x-user") == "admin"

    host = Starlette(routes=[Mount("/ops/queues", app=app(config, authorize=admins_only))])
    with TestClient(host) as client:
        assert client.get("/ops/queues/").status_code == 401
        page = client.get("/ops/queues/failed", headers={"X-User": "admin"})
        assert page.status_code == 200 and 'href="/ops/queues/static/dashboard.css"' in page.text
        assert client.get("/ops/queues/login").status_code in (401, 404)


def test_retry_all_retries_what_the_search_finds(client: TestClient, config: QueueConfig) -> None:
    fail(config, record_payload("/dev/null"))
    other = (f'{{"v":3,"id":"{new_job_id()}","job":"tests.AlwaysFails","data":{{"ledger":"x"}},'
             '"queue":"default","created_at":1}').encode()  # fmt: skip
    fail(config, other)
    reply = client.post("/failed/retry", data={"all": "1", "job": "tests.Record"}, headers=bearer())
    assert "1 job(s) queued again" in reply.text
    left = client.get("/failed", headers=bearer()).text
    assert "tests.AlwaysFails" in left and "tests.Record" not in left.split("<tbody>")[1]


def test_odd_queue_names_and_idle_queues_with_failures(
    client: TestClient, config: QueueConfig
) -> None:
    store = FailedJobStore(config.database_url)
    store.record(FailedJob(new_job_id(), config.driver, "team/emails", b"{}", "app.Boom: x"))
    store.close()
    queues = client.get("/queues", headers=bearer()).text
    assert 'href="/queues/team/emails"' in queues  # shown though no worker serves it
    assert client.get("/queues/team/emails", headers=bearer()).status_code == 200
    client.post("/queues/team/emails/pause", headers=bearer())
    assert 'data-queue="team/emails"' in client.get("/queues", headers=bearer()).text
    metrics = client.get("/metrics", headers=bearer())
    assert 'runequeue_failed_jobs{queue="team/emails"} 1.0' in metrics.text
    assert metrics.headers["X-Content-Type-Options"] == "nosniff"  # on every response
