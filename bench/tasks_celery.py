from celery import Celery

from bench.completion import REDIS_URL, completion

app = Celery("bench", broker=REDIS_URL)
app.conf.update(
    broker_transport_options={"global_keyprefix": "bench-celery:"},  # so clear() finds its keys
    task_default_queue="bench",
    task_ignore_result=True,  # and no result backend: no results, as for every other library
)


@app.task
def noop(sent_at: float = 0.0) -> None:
    completion.bump(sent_at)
