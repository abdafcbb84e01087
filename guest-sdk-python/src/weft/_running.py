"""Which step body runs: the host charges CPU time, and an interpreter
crash, to the step the guest says it runs."""

from __future__ import annotations

from collections.abc import Awaitable, Generator
from typing import Any

from wit_world.imports import durable

from . import _shared as _sh
from ._shared import api


class InStep:
    """Awaits a step body, telling the host which step runs each time the
    body resumes, and that the workflow body runs again each time it pauses:
    the host charges CPU time, and an interpreter crash, to that step
    alone (its siblings in flight are not at fault)."""

    __slots__ = ("_body", "_handle", "_api")

    def __init__(self, body: Awaitable[Any], handle: int) -> None:
        self._body = body
        self._handle = handle
        self._api = api() if _sh.SHARED else durable

    def __await__(self) -> Generator[Any, Any, Any]:
        it = self._body.__await__()
        value: Any = None
        error: BaseException | None = None
        running_step = self._api.running_step
        while True:
            running_step(self._handle)
            try:
                yielded = it.send(value) if error is None else it.throw(error)
            except StopIteration as done:
                return done.value
            finally:
                running_step(None)
            try:
                value, error = (yield yielded), None
            except BaseException as e:
                value, error = None, e
