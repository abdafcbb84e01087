"""A Python parent that fans out CPU-heavy work to Rust child workflows and
gathers their results: orchestration in Python, number crunching in Rust."""

import asyncio

from workers import WorkflowEntrypoint


class FanOut(WorkflowEntrypoint):
    async def run(self, event, step):
        cfg = event["payload"] or {}
        limit = int(cfg.get("limit", 200_000))
        parts = int(cfg.get("parts", 4))
        size = limit // parts
        ranges = [[i * size, limit if i == parts - 1 else (i + 1) * size] for i in range(parts)]
        # Each child is one durable call; a replay never starts a second one.
        counts = await asyncio.gather(
            *(step.run_workflow("primes", {"from": lo, "to": hi}, name=f"part {i}") for i, (lo, hi) in enumerate(ranges))
        )
        return {"limit": limit, "parts": [c["primes"] for c in counts], "primes": sum(c["primes"] for c in counts)}
