"""The dashboard's pages (GET) and actions (POST), each a small function of the `Dashboard`
and the request. `asgi` wraps each in the credential and CSRF checks before it runs."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from runequeue.batch_state import BatchRecord
from runequeue.dashboard.formatting import CHART_HEIGHT, bars, pretty_payload
from runequeue.prometheus import dashboard_metrics
from runequeue.recent_jobs import PAYLOAD_LIMIT

if TYPE_CHECKING:
    from runequeue.dashboard.asgi import Action, Dashboard, Page

PER_PAGE = 50
MAX_NAME = 255  # the longest queue name a backend keeps
MAX_SEARCH = 200


async def overview(d: Dashboard, request: Request) -> Response:
    data = await d.reader.overview()
    chart, top = bars(data.minutes, data.per_minute)
    return d.render(request, "overview.html", page="overview", o=data, chart=chart, top=top,
                    chart_height=CHART_HEIGHT)  # fmt: skip


async def queues(d: Dashboard, request: Request) -> Response:
    return d.render(request, "queues.html", page="queues", queues=await d.reader.queues())


async def queue(d: Dashboard, request: Request) -> Response:
    name = _name(request.path_params["name"])
    detail = await d.reader.queue(name)
    chart, top = bars(detail.minutes, detail.per_minute)
    return d.render(request, "queue.html", page="queues", q=detail, chart=chart, top=top,
                    chart_height=CHART_HEIGHT)  # fmt: skip


async def job(d: Dashboard, request: Request) -> Response:
    job_id = _name(request.path_params["job_id"])
    failed, attempts = await d.reader.job(job_id)
    if failed is None and not attempts:
        raise HTTPException(404, f"no failed or recent job with id {job_id[:64]!r}")
    payload, cut = pretty_payload(failed.payload if failed else attempts[0].payload)
    if attempts and not failed and attempts[0].payload_bytes > PAYLOAD_LIMIT:
        cut = True  # workers keep the first PAYLOAD_LIMIT bytes of a recent job's payload
    return d.render(request, "job.html", page="failed" if failed else "queues", job_id=job_id,
                    failed=failed, attempts=attempts, payload=payload, cut=cut)  # fmt: skip


async def failed(d: Dashboard, request: Request) -> Response:
    query = request.query_params
    queue_filter = _optional(query.get("queue"))
    job_filter = _optional(query.get("job"))
    text = _optional(query.get("q"), MAX_SEARCH)
    page = _page_number(query.get("page"))
    rows, total = await d.reader.failed_page(queue=queue_filter, job=job_filter, text=text,
                                             page=page, per_page=PER_PAGE)  # fmt: skip
    return d.render(
        request, "failed.html", page="failed", rows=rows, total=total, number=page,
        pages=max((total + PER_PAGE - 1) // PER_PAGE, 1), queue=queue_filter or "",
        job=job_filter or "", q=text or "", notice=query.get("notice", "")[:300],
    )  # fmt: skip


async def batches(d: Dashboard, request: Request) -> Response:
    records = await d.reader.batches()
    rows = [(record, _progress(record)) for record in records]
    return d.render(request, "batches.html", page="batches", batches=rows)


async def workers(d: Dashboard, request: Request) -> Response:
    return d.render(request, "workers.html", page="workers", workers=await d.reader.workers())


async def metrics(d: Dashboard, request: Request) -> Response:
    body, content_type = await dashboard_metrics(d.reader)
    return Response(body, media_type=content_type)


# Actions.


async def pause(d: Dashboard, request: Request, form: FormData) -> Response:
    name = _name(request.path_params["name"])
    await d.reader.pause(name)
    return _back(request, form, f"/queues/{quote(name)}")


async def resume(d: Dashboard, request: Request, form: FormData) -> Response:
    name = _name(request.path_params["name"])
    await d.reader.resume(name)
    return _back(request, form, f"/queues/{quote(name)}")


async def retry(d: Dashboard, request: Request, form: FormData) -> Response:
    """Retry the rows ticked (``id`` fields), or with ``all`` every failed job the search
    (``queue``, ``job``, ``q``) finds."""
    if form.get("all"):
        outcomes = await d.reader.retry_matching(
            queue=_optional(str(form.get("queue") or "")),
            job=_optional(str(form.get("job") or "")),
            text=_optional(str(form.get("q") or ""), MAX_SEARCH),
        )
    else:
        outcomes = await d.reader.retry(_ids(form), queue=None)
    done = sum(o.status == "retried" for o in outcomes)
    gone = sum(o.status == "missing" for o in outcomes)
    errors = [f"{o.ref or o.row_id}: {o.detail}" for o in outcomes if o.status == "error"]
    notice = f"{done} job(s) queued again"
    if gone:
        notice += f"; {gone} no longer failed (retried or forgotten already)"
    if errors:
        notice += "; could not retry " + "; ".join(errors[:3])
    return _to_failed(request, notice)


async def forget(d: Dashboard, request: Request, form: FormData) -> Response:
    ids = _ids(form)
    forgotten = await d.reader.forget(ids)
    notice = f"{forgotten} failed job(s) forgotten"
    if forgotten < len(ids):
        notice += f"; {len(ids) - forgotten} were already gone"
    return _to_failed(request, notice)


def _progress(record: BatchRecord) -> int:
    """0-100, as `Batch.progress`: the share of the batch's jobs that succeeded."""
    return 100 if record.total == 0 else round((record.total - record.pending) * 100 / record.total)


# Input: anything a browser (or a forger) sends is checked here, with a clear 400.


def _name(value: str) -> str:
    if not value or len(value) > MAX_NAME or not value.isprintable():
        raise HTTPException(400, "that is not a queue name or job id")
    return value


def _optional(value: str | None, longest: int = MAX_NAME) -> str | None:
    value = (value or "").strip()
    if len(value) > longest or not value.isprintable():
        raise HTTPException(400, f"a filter is at most {longest} printable characters")
    return value or None


def _page_number(value: str | None) -> int:
    if not value:
        return 1
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 1_000_000:
        raise HTTPException(400, "page must be a number from 1")
    return int(value)


def _ids(form: FormData) -> list[int]:
    values = form.getlist("id")
    if not values:
        raise HTTPException(400, "tick at least one failed job")
    if not all(isinstance(v, str) and v.isascii() and v.isdigit() and len(v) < 19 for v in values):
        raise HTTPException(400, "failed job ids are numbers")
    return [int(str(v)) for v in values]


def _back(request: Request, form: FormData, default: str) -> Response:
    base = str(request.scope.get("root_path", "")).rstrip("/")
    wanted = str(form.get("back") or "")
    target = wanted if wanted.startswith("/") and not wanted.startswith("//") else default
    return RedirectResponse(f"{base}{target}", status_code=303)


def _to_failed(request: Request, notice: str) -> Response:
    base = str(request.scope.get("root_path", "")).rstrip("/")
    response = RedirectResponse(f"{base}/failed?notice={_quote(notice)}", status_code=303)
    return response


def _quote(text: str) -> str:
    return quote(text, safe="")


PAGES: dict[str, Page] = {
    "/": overview,
    "/queues": queues,
    "/queues/{name:path}": queue,
    "/jobs/{job_id}": job,
    "/failed": failed,
    "/batches": batches,
    "/workers": workers,
    "/metrics": metrics,
}
ACTIONS: dict[str, Action] = {
    "/queues/{name:path}/pause": pause,
    "/queues/{name:path}/resume": resume,
    "/failed/retry": retry,
    "/failed/forget": forget,
}
