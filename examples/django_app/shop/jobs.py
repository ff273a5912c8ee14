"""The shop's jobs: found by runequeue's app at start (no --import needed)."""

import dataclasses
import logging

from runequeue import Job

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SendReceipt(Job, name="shop.SendReceipt"):
    order_id: int
    after_commit = True  # never before the order is committed, never for a rolled-back one

    async def handle(self) -> None:
        log.info("receipt for order %s", self.order_id)
