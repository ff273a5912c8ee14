"""Chains: jobs that run one after another (Laravel's ``Bus::chain``; built with `Bus.chain`).

No table or key holds a chain: the rest of it travels in each job's envelope (`payload.ChainRest`).
When a step's handler returns, the worker stores the next step in the same atomic step as the
step's acknowledgement (`Driver.ack_then`); when a step fails for good, the chain's catch job is
stored in the same atomic step as the failure (`Driver.bury`'s ``then``), and the steps after it
never run. Each step's id is fixed when the chain is dispatched, so a step stored twice is stored
once. A chain runs on one queue (``on_queue``, else its first job's, else the configuration's), so
that each hand-off touches one queue's keys.
"""

from __future__ import annotations

import time

import msgspec

from runequeue.drivers.base import Outgoing
from runequeue.payload import CHAINED_VERSION, ENVELOPE_VERSION, ChainRest, Codec, Envelope, Step
from runequeue.retry import Ack, Decision, Fail


def encoded(step: Step, follows: ChainRest | None, codec: Codec) -> Outgoing:
    """The stored form of ``step``, carrying what follows it."""
    envelope = Envelope(
        v=ENVELOPE_VERSION if follows is None else CHAINED_VERSION,
        id=step.id, job=step.job, data=step.data, queue=step.queue,
        max_tries=step.max_tries, backoff=step.backoff, timeout=step.timeout,
        created_at=time.time(),
        chain=msgspec.UNSET if follows is None else follows,
    )  # fmt: skip
    return Outgoing(step.id, step.queue, codec.encode(envelope), 0.0, step.max_tries)


def followers(envelope: Envelope, decision: Decision, codec: Codec) -> tuple[Outgoing, ...]:
    """The jobs to store with an attempt's outcome: after a success, the chain's next step; after
    a failure for good, its catch job; nothing otherwise (a retry, or no chain)."""
    rest = envelope.chain
    if isinstance(rest, msgspec.UnsetType):
        return ()
    if isinstance(decision, Ack) and rest.next:
        step, later = rest.next[0], rest.next[1:]
        follows = (
            ChainRest(id=rest.id, next=later, catch=rest.catch) if later or rest.catch else None
        )
        return (encoded(step, follows, codec),)
    if isinstance(decision, Fail) and rest.catch is not None:
        return (encoded(rest.catch, None, codec),)
    return ()
