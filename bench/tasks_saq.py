from typing import Any

from saq import Queue

from bench.completion import REDIS_URL, completion

NAME = "bench-saq"  # saq's keys: "saq:bench-saq:..." and the jobs' "saq:job:bench-saq:..."


async def noop(ctx: dict[str, Any], *, sent_at: float = 0.0) -> None:
    completion.bump(sent_at)


settings = {
    "queue": Queue.from_url(REDIS_URL, name=NAME),
    "functions": [noop],
    "concurrency": 10,  # its default: 50, 100 and 200 were no faster for a no-op job
}
