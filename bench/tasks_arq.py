from typing import Any, ClassVar

from arq.connections import RedisSettings

from bench.completion import REDIS_URL, completion

QUEUE = "arq:bench"  # arq's job keys are always "arq:job:...": the queue shares that prefix
# arq's CLI logs two INFO lines per job; warnings only, as Huey (-q) and RQ run here.
LOG_CONFIG = {"version": 1, "disable_existing_loggers": False,
              "loggers": {"arq": {"level": "WARNING"}}}  # fmt: skip


async def noop(ctx: dict[str, Any], sent_at: float = 0.0) -> None:
    completion.bump(sent_at)


class WorkerSettings:
    functions: ClassVar[list[Any]] = [noop]
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    queue_name = QUEUE
    max_jobs = 10  # its default: 100 or 500 were no faster, since arq starts jobs one at a time
    # Default 0.5 s: a job would wait 250 ms on average for the next poll. 1 ms is Huey's floor
    # here too; it costs arq about 13 % of a core while idle (2 ms: 8 %, and 0.5 ms more latency).
    poll_delay = 0.001
    keep_result = 0  # no results, as for every other library here
