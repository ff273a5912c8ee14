"""The benchmark table in docs/benchmarks.md (between two markers) and a bar chart beside it."""

from __future__ import annotations

import datetime as dt
import json
import platform
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
START, END = "<!-- bench-results:start -->", "<!-- bench-results:end -->"
HIGHER_IS_BETTER = {"enqueue/s", "bulk enqueue/s", "jobs/s, 1 process", "jobs/s, 2 processes"}
METRICS = [
    "enqueue/s", "bulk enqueue/s", "jobs/s, 1 process", "jobs/s, 2 processes",
    "latency p50 ms", "latency p99 ms", "peak RSS MiB",
]  # fmt: skip


# Libraries on a database rather than Redis: a table of their own, compared with
# runequeue-postgresql (MySQL and SQLite have no peer there but Huey's SQLite storage).
DATABASE_LIBRARIES = ("runequeue-sqlite", "runequeue-postgresql", "runequeue-mysql", "pgqueuer",
                      "procrastinate", "huey-sqlite")  # fmt: skip


def on_a_database(name: str) -> bool:
    return name.startswith(DATABASE_LIBRARIES)


def _best_peer(metric: str, medians: dict[str, dict[str, float]]) -> tuple[str, float] | None:
    peers = [(name, m[metric]) for name, m in medians.items()
             if not name.startswith("runequeue") and metric in m]  # fmt: skip
    if not peers:
        return None
    pick = max if metric in HIGHER_IS_BETTER else min
    return pick(peers, key=lambda peer: peer[1])


def table(medians: dict[str, dict[str, float]], ours_name: str = "runequeue") -> str:
    names = list(medians)
    lines = ["| metric | " + " | ".join(names) + f" | {ours_name} / best peer |",
             "|---" * (len(names) + 2) + "|"]  # fmt: skip
    for metric in METRICS:
        cells = []
        for name in names:
            value = medians[name].get(metric)
            cells.append(
                "—" if value is None else f"{value:,.2f}" if value < 10 else f"{value:,.0f}"
            )
        best = _best_peer(metric, medians)
        ours = medians.get(ours_name, {}).get(metric)
        ratio = (
            "—"
            if best is None or ours is None or best[1] == 0
            else f"{ours / best[1]:.2f} ({best[0]})"
        )
        lines.append(f"| {metric} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def targets(medians: dict[str, dict[str, float]]) -> str:
    """Issue 6's targets, checked against this run."""
    ours = medians.get("runequeue", {})

    def peer(metric: str) -> tuple[str, float]:
        return _best_peer(metric, medians) or ("no peer", float("nan"))

    one, two = ours.get("jobs/s, 1 process", 0.0), ours.get("jobs/s, 2 processes", 0.0)
    best_one, best_enqueue = peer("jobs/s, 1 process"), peer("enqueue/s")
    p50, p99 = peer("latency p50 ms"), peer("latency p99 ms")
    rows = [
        ("one process, log line on: >= 10,000 no-op jobs/s", f"{one:,.0f}", one >= 10_000),
        (
            "one process: >= 5x the best peer's one process",
            f"{one / best_one[1]:.2f}x {best_one[0]}",
            one >= 5 * best_one[1],
        ),
        ("two processes >= 1.8x one", f"{two / one:.2f}x" if one else "-", two >= 1.8 * one),
        (
            "single-call enqueue >= 1.5x the best peer",
            f"{ours.get('enqueue/s', 0.0) / best_enqueue[1]:.2f}x {best_enqueue[0]}",
            ours.get("enqueue/s", 0.0) >= 1.5 * best_enqueue[1],
        ),
        (
            "bulk enqueue >= 100,000 jobs/s",
            f"{ours.get('bulk enqueue/s', 0.0):,.0f}",
            ours.get("bulk enqueue/s", 0.0) >= 100_000,
        ),
        (
            "idle latency p50 / p99 at or below the best peer",
            f"{ours.get('latency p50 ms', 0.0):.2f} / {ours.get('latency p99 ms', 0.0):.2f} ms vs "
            f"{p50[0]} {p50[1]:.2f} / {p99[0]} {p99[1]:.2f} ms",
            ours.get("latency p50 ms", 1e9) <= p50[1] and ours.get("latency p99 ms", 1e9) <= p99[1],
        ),
        (
            "worker RSS <= 60 MB",
            f"{ours.get('peak RSS MiB', 0.0):.0f} MiB",
            ours.get("peak RSS MiB", 1e9) * 1.048576 <= 60,
        ),
    ]
    lines = ["| target | measured | met? |", "|---|---|---|"]
    lines += [f"| {target} | {value} | {'yes' if met else 'no'} |" for target, value, met in rows]
    return "\n".join(lines)


def chart(medians: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["enqueue/s", "jobs/s, 1 process", "jobs/s, 2 processes"]
    names = list(medians)
    figure, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4))
    for axis, metric in zip(axes, metrics, strict=True):
        values = [medians[name].get(metric, 0.0) for name in names]
        colours = ["#c0392b" if name.startswith("runequeue") else "#7f8c8d" for name in names]
        axis.barh(names, values, color=colours)
        axis.set_title(metric)
        axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def write_docs(medians: dict[str, dict[str, float]], settings: dict[str, str], *, jobs: int,
               rounds: int) -> None:  # fmt: skip
    raw = {"medians": medians, "settings": settings, "jobs": jobs, "rounds": rounds}
    (DOCS / "benchmarks.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    doc = DOCS / "benchmarks.md"
    header = (
        f"Last run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, Python "
        f"{platform.python_version()}; medians of {rounds} interleaved rounds, {jobs:,} no-op jobs "
        "per processing run, Redis on loopback.\n\nWorker settings:\n\n"
        + "\n".join(f"- **{name}**: {setting}" for name, setting in settings.items())
    )
    on_redis = {name: m for name, m in medians.items() if not on_a_database(name)}
    on_databases = {name: m for name, m in medians.items() if on_a_database(name)}
    body = (
        f"{header}\n\nOn Redis:\n\n{table(on_redis)}\n\n"
        f"On a database (no Redis):\n\n{table(on_databases, 'runequeue-postgresql')}\n\n"
        f"![throughput](benchmarks.png)\n\n"
        f"Against the targets of issue 6, in this run:\n\n{targets(on_redis)}"
    )
    text = doc.read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    doc.write_text(f"{head}{START}\n{body}\n{END}{tail}", encoding="utf-8")
    chart(medians, DOCS / "benchmarks.png")
