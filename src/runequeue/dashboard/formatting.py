"""How figures read on the dashboard's pages (the templates' filters), and a payload made
readable. Output is text: the templates escape it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any

from runequeue.metrics_history import Totals
from runequeue.payload import SIGNED_PREFIX

UNKNOWN = "\N{EN DASH}"  # a figure not known (yet)
SHOWN_PAYLOAD_BYTES = 256 * 1024  # more is cut, with a note: a page must stay usable


def seconds(value: float | None) -> str:
    """A duration: ``850 µs``, ``12 ms``, ``3.2 s``, ``4 min``; `UNKNOWN` when unknown."""
    if value is None:
        return UNKNOWN
    if value < 0.001:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def ago(epoch_s: float | None) -> str:
    if not epoch_s:
        return UNKNOWN
    return f"{seconds(max(time.time() - epoch_s, 0.0))} ago"


def when(value: float | dt.datetime | None) -> str:
    """A moment in UTC, to the second."""
    if value is None:
        return UNKNOWN
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    else:
        moment = dt.datetime.fromtimestamp(value, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def percent(share: float) -> str:
    return f"{share * 100:.1f} %"


def number(value: int) -> str:
    return f"{value:,}"


def pretty_payload(raw: bytes | str) -> tuple[str, bool]:
    """The payload indented if it is JSON (a signed one shown without its signature), else as
    stored; and whether it was cut at `SHOWN_PAYLOAD_BYTES`."""
    data = raw.encode(errors="surrogateescape") if isinstance(raw, str) else raw
    cut = len(data) > SHOWN_PAYLOAD_BYTES
    if data.startswith(SIGNED_PREFIX):
        data = data.split(b":", 3)[-1]
    if not cut:
        try:
            return json.dumps(json.loads(data), indent=2, ensure_ascii=False), False
        except (ValueError, RecursionError):
            pass
    return data[:SHOWN_PAYLOAD_BYTES].decode(errors="backslashreplace"), cut


@dataclasses.dataclass(frozen=True)
class Bar:
    """One minute of a throughput chart: jobs done, with those failed stacked on top."""

    x: int
    done_y: int
    done_h: int
    failed_y: int
    failed_h: int
    title: str


CHART_HEIGHT = 80
BAR_STEP = 10  # px per minute; the SVG scales to the page's width


def bars(minutes: list[int], series: list[Totals]) -> tuple[list[Bar], int]:
    """The bars of a per-minute chart, and the tallest minute's total (the scale)."""
    top = max([t.done + t.failed for t in series] + [1])
    found = []
    for i, (minute, totals) in enumerate(zip(minutes, series, strict=True)):
        done_h = round(totals.done * CHART_HEIGHT / top)
        failed_h = round(totals.failed * CHART_HEIGHT / top)
        moment = dt.datetime.fromtimestamp(minute * 60, dt.UTC).strftime("%H:%M")
        found.append(Bar(
            x=i * BAR_STEP, done_y=CHART_HEIGHT - done_h, done_h=done_h,
            failed_y=CHART_HEIGHT - done_h - failed_h, failed_h=failed_h,
            title=f"{moment} UTC: {totals.done} done, {totals.failed} failed",
        ))  # fmt: skip
    return found, top


FILTERS: dict[str, Callable[..., Any]] = {
    "seconds": seconds,
    "ago": ago,
    "when": when,
    "percent": percent,
    "number": number,
}
