import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.completion import REDIS_URL, completion

broker = RedisBroker(url=REDIS_URL, namespace="bench-dramatiq")
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench", max_retries=0)
def noop(sent_at: float = 0.0) -> None:
    completion.bump(sent_at)
