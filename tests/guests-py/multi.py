"""Two workflows in one module: `weft build` needs --class."""

from weft import WorkflowEntrypoint


class First(WorkflowEntrypoint):
    async def run(self, event, step):
        return "first"


class Second(WorkflowEntrypoint):
    async def run(self, event, step):
        return "second"
