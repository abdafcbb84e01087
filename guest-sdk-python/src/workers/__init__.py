"""Compatibility with Cloudflare's Python Workers SDK: the workflow objects
of `weft` under the names Cloudflare code imports.

`WorkerEntrypoint` and `Response` exist so that a Cloudflare module that
also defines its starter Worker imports unchanged; weft runs only the
module's `WorkflowEntrypoint` subclass.
"""

from typing import Any

from weft import NonRetryableError, WorkflowEntrypoint, WorkflowStep, fetch


class WorkerEntrypoint:
    """Placeholder for Cloudflare's Worker entrypoint; weft never calls it."""

    def __init__(self, ctx: Any = None, env: Any = None) -> None:
        self.ctx = ctx
        self.env = env


class Response:
    """Placeholder for Cloudflare's `Response`; weft never calls it."""

    def __init__(self, body: Any = None, status: int = 200, headers: Any = None) -> None:
        self.body = body
        self.status = status
        self.headers = headers


__all__ = ["NonRetryableError", "Response", "WorkerEntrypoint", "WorkflowEntrypoint", "WorkflowStep", "fetch"]
