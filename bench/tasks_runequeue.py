import dataclasses

from bench.completion import completion
from runequeue import Job


@dataclasses.dataclass
class NoOp(Job, name="bench.NoOp"):
    sent_at: float = 0.0

    async def handle(self) -> None:
        completion.bump(self.sent_at)
