"""Durable workflows for weft, in Python.

The API is that of Cloudflare's Python Workflows SDK::

    from weft import WorkflowEntrypoint, NonRetryableError

    class Checkout(WorkflowEntrypoint):
        async def run(self, event, step):
            @step.do(config={"retries": {"limit": 3, "delay": "1 second", "backoff": "linear"}})
            async def charge():
                return {"charged": event["payload"]["amount"]}

            receipt = await charge()
            await step.sleep("cool-off", "10 seconds")
            approval = await step.wait_for_event("approval", "approved", timeout="1 hour")
            return {"receipt": receipt, "by": approval["payload"]}

Build it into a component with ``weft build app.py -o app.wasm`` and run it
with ``weft run app.wasm``. The same objects are importable from the
``workers`` module, so Cloudflare code runs unchanged.
"""

from ._io import (
    Env,
    FetchDenied,
    FetchError,
    FetchFailed,
    FetchInvalidRequest,
    FetchNotInStep,
    FetchResponse,
    FetchTimeout,
    fetch,
    secret,
)
from ._errors import NonRetryableError, StepError, WaitTimeoutError
from ._workflow import (
    StepContext,
    StepFunction,
    WorkflowEntrypoint,
    WorkflowStep,
)

__all__ = [
    "Env",
    "FetchDenied",
    "FetchError",
    "FetchFailed",
    "FetchInvalidRequest",
    "FetchNotInStep",
    "FetchResponse",
    "FetchTimeout",
    "fetch",
    "secret",
    "NonRetryableError",
    "StepContext",
    "StepError",
    "StepFunction",
    "WaitTimeoutError",
    "WorkflowEntrypoint",
    "WorkflowStep",
]
