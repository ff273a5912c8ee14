"""The chaos scenarios' figures, written into docs/reliability.md between two markers."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

START = "<!-- chaos-results:start -->"
END = "<!-- chaos-results:end -->"
DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


@dataclasses.dataclass(frozen=True)
class Result:
    scenario: str
    driver: str
    jobs: int
    faults: str
    lost: int
    duplicates: int
    max_redelivery_s: float | None = None
    note: str = ""


def table(results: list[Result]) -> str:
    lines = [
        f"Last run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "| scenario | driver | jobs | faults injected | lost | duplicates "
        "| max redelivery | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: (int(r.scenario[1:].split("/")[0]), r.driver)):
        redelivery = "—" if r.max_redelivery_s is None else f"{r.max_redelivery_s:.2f} s"
        lines.append(
            f"| {r.scenario} | {r.driver} | {r.jobs} | {r.faults} | {r.lost} | {r.duplicates} "
            f"| {redelivery} | {r.note} |"
        )
    return "\n".join(lines)


def write(results: list[Result], doc: Path = DOC) -> None:
    text = doc.read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    doc.write_text(f"{head}{START}\n{table(results)}\n{END}{tail}", encoding="utf-8")
