"""How a component runs a workflow class: the `run` export that `weft
build` generates calls `make_world`, which finds the module's workflow and
runs it per call, with timers for `asyncio.sleep` inside steps."""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
from collections.abc import Callable
from typing import Any

from componentize_py_types import Err
from wit_world.imports import durable
from wit_world.imports import weft_workflow_types as types

from . import _shared as _sh

from ._shared import RunStopped, api, check, current, enter
from ._shared import _ALONE, _current as _RUN_VAR
from ._workflow import WorkflowEntrypoint, WorkflowStep, _check_json, _info, _report


async def run_workflow(cls: type[WorkflowEntrypoint], event: types.WorkflowEvent) -> str:
    """Runs a workflow class for one `run` export call."""
    try:
        payload = json.loads(event.payload)
    except ValueError as e:
        raise Err(types.ErrorInfo("InvalidInput", f"the input is not JSON: {e}")) from None
    ev = {
        "payload": payload,
        "timestamp": datetime.datetime.fromtimestamp(event.timestamp_ms / 1000, tz=datetime.timezone.utc),
        "instanceId": event.instance_id,
        "workflowName": event.workflow_name,
    }
    try:
        result = await cls().run(ev, WorkflowStep())
        _check_json(result, "the workflow's return value")
    except Err:
        raise
    except Exception as e:
        _report(e)
        raise Err(_info(e)) from None
    finally:
        _drain_other_tasks()
    return json.dumps(result)


async def run_shared(cls: type[WorkflowEntrypoint], run: Any, event: types.WorkflowEvent) -> str:
    """Runs a workflow class for one `run-shared` export call: one run in
    a shared instance, with `run`'s durable calls."""
    enter(run)
    try:
        return await run_workflow(cls, event)
    except RunStopped:
        raise Err(types.ErrorInfo("RunStopped", "the host stopped this run")) from None


def _drain_other_tasks() -> None:
    """Keeps the component task alive until durable calls still in flight
    (e.g. siblings of a failed `gather`) finish: the component model does
    not let a task exit while it has pending calls. The host has the result
    already and drops the instance (or, in a shared one, stops the run, so
    they return at once). A shared run's `run` resource is dropped once
    none of its calls is in flight."""
    import componentize_py_async_support

    me = asyncio.current_task()
    if not _sh.SHARED:
        others = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        if others:

            async def drain_all() -> None:
                await asyncio.gather(*others, return_exceptions=True)

            componentize_py_async_support.spawn(drain_all())
        return
    run = current()
    others = [t for t in asyncio.all_tasks() if t is not me and not t.done() and _run_of(t) is run]

    def release() -> None:
        run.api.__exit__(None, None, None)

    if not others:
        release()
        return

    async def drain() -> None:
        await asyncio.gather(*others, return_exceptions=True)
        release()

    componentize_py_async_support.spawn(drain())


def _run_of(task: asyncio.Task[Any]) -> Any:
    """The run a task belongs to (tasks inherit their creator's context)."""
    get_context = getattr(task, "get_context", None)
    if get_context is None:
        return current()
    return get_context().get(_RUN_VAR, _ALONE)


def find_workflow(module: Any, class_name: str | None = None) -> type[WorkflowEntrypoint]:
    """Finds the `WorkflowEntrypoint` subclass a module defines."""
    if class_name is not None:
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, WorkflowEntrypoint)):
            raise SystemExit(f"weft: {module.__name__} has no WorkflowEntrypoint subclass named {class_name!r}")
        return cls
    found = [
        v
        for v in vars(module).values()
        if isinstance(v, type)
        and issubclass(v, WorkflowEntrypoint)
        and v is not WorkflowEntrypoint
        and v.__module__ == module.__name__
    ]
    if not found:
        raise SystemExit(f"weft: {module.__name__} defines no WorkflowEntrypoint subclass")
    if len(found) > 1:
        names = ", ".join(sorted(c.__name__ for c in found))
        raise SystemExit(f"weft: {module.__name__} defines several workflows ({names}); choose one with --class")
    return found[0]


def _install_timers() -> None:
    """componentize-py's event loop has no timers; give it some, so that
    `asyncio.sleep(n)` and `asyncio.wait_for` work inside steps."""
    loop = asyncio.get_event_loop()
    if getattr(loop, "_weft_timers", False):
        return
    import time

    def call_later(delay: float, callback: Callable[..., object], *args: Any, context: Any = None) -> asyncio.TimerHandle:
        when = time.monotonic() + max(delay, 0.0)
        handle = asyncio.TimerHandle(when, callback, args, loop, context)

        shared = _sh.SHARED
        run = api() if shared else durable

        async def fire() -> None:
            await run.delay(max(int(delay * 1000), 0))
            if shared:
                try:
                    check()
                except RunStopped:
                    return
            if not handle.cancelled():
                handle._run()

        loop.create_task(fire())
        return handle

    def call_at(when: float, callback: Callable[..., object], *args: Any, context: Any = None) -> asyncio.TimerHandle:
        return call_later(when - time.monotonic(), callback, *args, context=context)

    def timer_handle_cancelled(handle: asyncio.TimerHandle) -> None:
        pass

    setattr(loop, "_timer_handle_cancelled", timer_handle_cancelled)
    setattr(loop, "call_later", call_later)
    setattr(loop, "call_at", call_at)
    setattr(loop, "time", time.monotonic)
    setattr(loop, "_weft_timers", True)


def make_world(module_name: str, class_name: str | None = None) -> type:
    """Builds the component's `WitWorld` export for a workflow module."""
    import wit_world

    module = sys.modules[module_name]
    cls = find_workflow(module, class_name)

    class WitWorld(wit_world.WitWorld):
        async def run(self, event: types.WorkflowEvent) -> str:
            _install_timers()
            return await run_workflow(cls, event)

        async def run_shared(self, run: Any, event: types.WorkflowEvent) -> str:
            _install_timers()
            return await run_shared(cls, run, event)

    return WitWorld
