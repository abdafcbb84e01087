"""The shortest useful weft workflow in Python: two steps around a durable
sleep, written with Cloudflare's Python Workflows API."""

from typing import Any

from workers import WorkflowEntrypoint, WorkflowStep


class Hello(WorkflowEntrypoint):
    async def run(self, event: dict[str, Any], step: WorkflowStep) -> dict[str, Any]:
        name = event["payload"]["name"]

        @step.do("greet")
        async def greet() -> str:
            return f"Hello, {name}!"

        greeting = await greet()
        await step.sleep("pause", "1 second")

        @step.do("count")
        async def count() -> int:
            return sum(c.isalpha() for c in greeting)

        return {"greeting": greeting, "letters": await count()}
