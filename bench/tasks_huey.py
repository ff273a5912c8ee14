from huey import RedisHuey

from bench.completion import REDIS_URL, completion

huey = RedisHuey("bench", url=REDIS_URL, results=False)


@huey.task()
def noop(sent_at: float = 0.0) -> None:
    completion.bump(sent_at)
