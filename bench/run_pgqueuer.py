"""``python -m bench.run_pgqueuer``: a PgQueuer worker, as ``pgq run`` would start it.

``pgq run`` is broken in pgqueuer 1.6.0: its ``--log-level`` option's parser returns a str and
``setup_fancy_logger`` reads ``level.name``, so every invocation (the default included) fails
with ``AttributeError: 'str' object has no attribute 'name'`` before the worker starts. This
runs the worker through ``pgqueuer.run``, its documented programmatic equivalent of ``pgq run``,
on uvloop as the CLI would, with the same options; its logger stays at WARNING.
"""

from __future__ import annotations

import argparse
import logging

import uvloop
from pgqueuer import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run_pgqueuer", description=__doc__)
    parser.add_argument("--batch-size", type=int, default=10, help="as pgq run (default 10)")
    parser.add_argument("--max-concurrent-tasks", type=int, default=None, help="as pgq run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    uvloop.run(
        run(
            "bench.tasks_pgqueuer:create_pgqueuer",
            batch_size=args.batch_size,
            max_concurrent_tasks=args.max_concurrent_tasks,
        )
    )


if __name__ == "__main__":
    main()
