"""The workflow API: WorkflowEntrypoint, WorkflowStep and errors."""

from __future__ import annotations

import asyncio
import builtins
import datetime
import inspect
import json
import math
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar, cast, overload

from componentize_py_types import Err, Ok
from wit_world.imports import durable
from wit_world.imports import weft_workflow_types as types

from . import _shared as _sh
from ._begin import _begin
from ._duration import Duration, to_ms
from ._errors import NonRetryableError, StepError, WaitTimeoutError
from ._io import Env
from ._running import InStep as _InStep
from ._shared import api as _api, check as _check, stopped_filler as _stopped_filler

T = TypeVar("T")

DEFAULT_EVENT_TIMEOUT = "24 hours"


class StepContext:
    """What a step's `ctx` parameter receives."""

    def __init__(self, name: str, attempt: int, config: Mapping[str, Any]) -> None:
        self.step_name = name
        self.attempt = attempt
        self.config = dict(config)

    def __getitem__(self, key: str) -> Any:
        return {"step": {"name": self.step_name}, "attempt": self.attempt, "config": self.config}[key]

    def __repr__(self) -> str:
        return f"StepContext(step_name={self.step_name!r}, attempt={self.attempt})"


def _check_json(value: Any, path: str) -> None:
    """Accepts dict (str keys), list, str, int, float, bool and None only."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{path} is {value}, which JSON cannot represent")
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{path} has a key of type {type(k).__name__}; JSON keys must be str")
            _check_json(v, f"{path}[{k!r}]")
        return
    raise TypeError(
        f"{path} is a {type(value).__name__}; return JSON-compatible values "
        "(dict, list, str, int, float, bool, None)"
    )


def _error_class(name: str, module_globals: Mapping[str, Any]) -> type[Exception]:
    if name == "NonRetryableError":
        return NonRetryableError
    if name == "WaitTimeoutError":
        return WaitTimeoutError
    for scope in (module_globals, vars(builtins)):
        cls = scope.get(name)
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls
    cls = _unknown_errors.get(name)
    if cls is None:
        cls = type(name, (StepError,), {})
        _unknown_errors[name] = cls
    return cls


_unknown_errors: dict[str, type[Exception]] = {}


def _rebuild(info: types.ErrorInfo, module_globals: Mapping[str, Any]) -> Exception:
    cls = _error_class(info.name, module_globals)
    try:
        return cls(info.message)
    except Exception:
        fallback: type[Exception] = type(info.name, (StepError,), {})
        return fallback(info.message)


def _info(e: BaseException) -> types.ErrorInfo:
    # `str(KeyError("sku"))` is `"'sku'"`: show the key once, not quoted twice.
    if isinstance(e, KeyError) and len(e.args) == 1:
        return types.ErrorInfo(type(e).__name__, str(e.args[0]))
    return types.ErrorInfo(type(e).__name__, str(e))


_SDK_DIR = __file__.rsplit("/", 1)[0] + "/"


def _traceback(e: BaseException) -> str:
    """`e`'s traceback trimmed to the workflow's own code: frames of the
    SDK, asyncio and the component's glue are left out."""
    import traceback

    frames = [
        f
        for f in traceback.extract_tb(e.__traceback__)
        if not f.filename.startswith(_SDK_DIR)
        and "/asyncio/" not in f.filename
        and "componentize_py" not in f.filename
    ]
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(e), e)
    return "".join(lines)


def _report(e: BaseException) -> None:
    """Tells the host where the error the workflow ends with came from."""
    try:
        (_api() if _sh.SHARED else durable).error_detail(_traceback(e))
    except Exception:
        pass  # a host without `error-detail` still gets the error itself


_decode = json.JSONDecoder().raw_decode


def _loads(text: str) -> Any:
    """`json.loads` of a journaled result. The host's JSON is compact, so the
    decoder's scan is used directly, without the whitespace handling around
    it; anything else takes `json.loads`, which also raises its errors."""
    try:
        value, end = _decode(text)
    except ValueError:
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


_UNSET: Any = object()

async def _run_step(
    name: str,
    config: Mapping[str, Any] | None,
    body: Callable[[StepContext], Awaitable[Any]],
    module_globals: Mapping[str, Any],
    begun: tuple[types.StepStart, dict[str, Any]] | None = None,
) -> Any:
    """Runs one durable step: journaled result, retries, replay. `begun` is
    the answer of `step-begin` and the effective config, when the caller
    began the step already."""
    if begun is None:
        start, effective = _begin(name, config)
    else:
        start, effective = begun
    if isinstance(start, types.StepStart_Cached):
        if isinstance(start.value, Ok):
            return _loads(start.value.value)
        if _sh.SHARED:
            _stopped_filler(start.value.value.name)
        raise _rebuild(start.value.value, module_globals)
    handle = start.value.handle
    attempt = start.value.attempt
    shared = _sh.SHARED
    api = _api() if shared else durable
    if not start.value.started:
        await api.step_ready(handle)
        if shared:
            _check()
    while True:
        outcome: types.StepOutcome
        try:
            value = await _InStep(body(StepContext(name, attempt, effective)), handle)
            try:
                _check_json(value, f"the value returned by step {name!r}")
                outcome = types.StepOutcome_Ok(json.dumps(value))
            except TypeError as e:
                outcome = types.StepOutcome_NonRetryable(types.ErrorInfo("TypeError", str(e)))
        except NonRetryableError as e:
            outcome = types.StepOutcome_NonRetryable(_info(e))
        except Exception as e:
            outcome = types.StepOutcome_Err(_info(e))
        verdict = await api.step_end(handle, outcome)
        if shared:
            _check()
        if isinstance(verdict, types.StepVerdict_Retry):
            attempt = verdict.value
            continue
        if isinstance(verdict.value, Ok):
            return _loads(verdict.value.value)
        raise _rebuild(verdict.value.value, module_globals)


_by_code: dict[Any, tuple[bool, list[str]]] = {}


def _signature(fn: Callable[..., Any]) -> tuple[bool, list[str]]:
    """Whether a step function is an `async def`, and its parameter names. A
    step declared in a loop is the same code each time, so this is worked
    out once per code object, for functions that carry no attributes of
    their own (`__wrapped__`, `__signature__` and the coroutine marker live
    there)."""
    code = getattr(fn, "__code__", None)
    plain = code is not None and not getattr(fn, "__dict__", None)
    if plain:
        known = _by_code.get(code)
        if known is not None:
            return known
    found = (inspect.iscoroutinefunction(fn), list(inspect.signature(fn).parameters))
    if plain:
        _by_code[code] = found
    return found


class StepFunction(Generic[T]):
    """A function decorated with `@step.do`: awaiting a call runs the step."""

    def __init__(
        self,
        step: WorkflowStep,
        fn: Callable[..., Awaitable[T]],
        name: str,
        depends: list[Any] | None,
        concurrent: bool,
        config: Mapping[str, Any] | None,
    ) -> None:
        is_async, params = _signature(fn)
        if not is_async:
            raise TypeError(f"@step.do needs an `async def`, got {fn!r}")
        self._step = step
        self._fn = fn
        self.name = name
        self.__name__ = fn.__name__
        # `depends=` given: Cloudflare's legacy mode (results by position);
        # else the implicit mode (results by parameter name).
        self._depends = None if depends is None else list(depends)
        self._concurrent = concurrent
        self._config = config
        self._done: asyncio.Future[Any] | None = None
        # The value of a first call answered from the journal, which needs
        # no future: see `__call__`.
        self._value: Any = _UNSET
        self._undo: Callable[..., Awaitable[Any]] | None = None
        self._rollback = False
        self._params = params
        step._register(self)

    def undo(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """Registers the compensation of a `@step.with_rollback` step. It
        receives the error that caused the rollback and the step's value."""
        if not self._rollback:
            raise TypeError(f"step {self.name!r} was not declared with @step.with_rollback")
        self._undo = fn
        return fn

    def _bindings(self, given: dict[str, Any]) -> list[tuple[str, StepFunction[Any]]]:
        """Which step's result each parameter receives, as Cloudflare binds
        them; parameters given to the call are left out.

        - With `depends=` (legacy mode), the results go by position, in
          `depends` order, to the parameters other than `ctx`; a count that
          does not match raises `TypeError`.
        - Without it (implicit mode), each parameter names a step function
          or is `ctx`; any other parameter raises `TypeError`.
        """
        params = [p for p in self._params if p not in given]
        if self._depends is not None:
            for d in self._depends:
                if not isinstance(d, StepFunction):
                    raise TypeError(f"step {self.name!r}: depends= takes step functions, got {d!r}")
            non_ctx = [p for p in params if p != "ctx"]
            if len(non_ctx) != len(self._depends):
                raise TypeError(
                    f"step {self.name!r} declares {len(non_ctx)} non-ctx parameter(s) "
                    f"but 'depends' has {len(self._depends)} item(s)"
                )
            return list(zip(non_ctx, self._depends))
        bound: list[tuple[str, StepFunction[Any]]] = []
        for p in params:
            if p == "ctx":
                continue
            dep = self._step._by_function_name.get(p)
            if dep is None or dep is self:
                raise TypeError(
                    f"step {self.name!r}: received unexpected parameter {p!r} "
                    "(a parameter names an earlier step function, whose result it receives, "
                    "or is `ctx`; or pass `depends=[...]` to bind results by position)"
                )
            bound.append((p, dep))
        return bound

    async def _resolve(self) -> Any:
        """The value of this step as a dependency: run once, then reused."""
        if self._value is not _UNSET:
            return self._value
        if self._done is None:
            self._done = asyncio.ensure_future(self._execute({}))
        return await asyncio.shield(self._done)

    async def _execute(
        self,
        given: dict[str, Any],
        bindings: list[tuple[str, StepFunction[Any]]] | None = None,
        begun: tuple[types.StepStart, dict[str, Any]] | None = None,
    ) -> T:
        if bindings is None:
            bindings = self._bindings(given)
        # Each dependency once, in order, even if bound to two parameters.
        deps = list(dict.fromkeys(d for _, d in bindings))
        results: dict[int, Any] = {}
        if deps:
            if self._concurrent:
                values = await asyncio.gather(*(d._resolve() for d in deps))
            else:
                values = [await d._resolve() for d in deps]
            results = {id(d): v for d, v in zip(deps, values)}
        by_param = {p: results[id(d)] for p, d in bindings}
        module_globals = getattr(self._fn, "__globals__", {})

        async def body(ctx: StepContext) -> Any:
            kwargs: dict[str, Any] = {}
            for p in self._params:
                if p in given:
                    kwargs[p] = given[p]
                elif p in by_param:
                    kwargs[p] = by_param[p]
                elif p == "ctx":
                    kwargs[p] = ctx
            return await self._fn(**kwargs)

        value = await _run_step(self.name, self._config, body, module_globals, begun)
        if self._rollback:
            self._step._undo_stack.append((self, value))
        return cast(T, value)

    async def __call__(self, *args: Any, **kwargs: Any) -> T:
        given = self._given(args, kwargs)
        if self._done is not None or self._value is not _UNSET:
            return await self._execute(given)
        bindings = self._bindings(given)
        begun = None
        if not bindings and not self._rollback:
            # A replay answers most first calls from the journal: take the
            # value without a future or a body (the same `step-begin`, at
            # the same point, as below).
            start, effective = _begin(self.name, self._config)
            if isinstance(start, types.StepStart_Cached) and isinstance(start.value, Ok):
                self._value = _loads(start.value.value)
                return cast(T, self._value)
            begun = (start, effective)
        # The first call is also this step's value as a dependency: publish
        # it through a future, but run the step in this task (a task per
        # step would cost an event-loop turn per step).
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._done = done
        try:
            value = await self._execute(given, bindings, begun)
        except asyncio.CancelledError:
            done.cancel()
            raise
        except BaseException as e:
            done.set_exception(e)
            done.exception()  # seen here; dependents still get it
            raise
        done.set_result(value)
        return value

    def _given(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        given = dict(zip(self._params, args))
        given.update(kwargs)
        return given

    def __repr__(self) -> str:
        return f"<step {self.name!r}>"


class WorkflowStep:
    """The `step` argument of `run`: durable steps, sleeps and events."""

    def __init__(self) -> None:
        self._by_function_name: dict[str, StepFunction[Any]] = {}
        self._undo_stack: list[tuple[StepFunction[Any], Any]] = []

    def _register(self, fn: StepFunction[Any]) -> None:
        self._by_function_name[fn.__name__] = fn

    @overload
    def do(
        self,
        name: Callable[..., Awaitable[T]],
        *,
        depends: list[Any] | None = None,
        concurrent: bool = False,
        config: Mapping[str, Any] | None = None,
    ) -> StepFunction[T]: ...

    @overload
    def do(
        self,
        name: str | None = None,
        *,
        depends: list[Any] | None = None,
        concurrent: bool = False,
        config: Mapping[str, Any] | None = None,
    ) -> Callable[[Callable[..., Awaitable[T]]], StepFunction[T]]: ...

    def do(
        self,
        name: str | Callable[..., Awaitable[Any]] | None = None,
        *,
        depends: list[Any] | None = None,
        concurrent: bool = False,
        config: Mapping[str, Any] | None = None,
    ) -> Any:
        """Decorates an `async def` as a durable step; `await fn()` runs it.

        `name` defaults to the function's name. Dependencies are bound as
        Cloudflare binds them. Without `depends=`, each parameter names an
        earlier step function and receives its result, or is `ctx` (the
        `StepContext`); any other parameter raises `TypeError`. With
        `depends=[a, b]`, the results go by position to the parameters other
        than `ctx`, and their count must match. `concurrent=True` resolves
        dependencies concurrently. `config` is
        `{"retries": {"limit", "delay", "backoff"}, "timeout"}`.
        """
        if callable(name):
            return StepFunction(self, name, name.__name__, depends, concurrent, config)

        def decorate(fn: Callable[..., Awaitable[T]]) -> StepFunction[T]:
            return StepFunction(self, fn, name or fn.__name__, depends, concurrent, config)

        return decorate

    def with_rollback(
        self, name: str | None = None, *, config: Mapping[str, Any] | None = None
    ) -> Callable[[Callable[..., Awaitable[T]]], StepFunction[T]]:
        """Like `do`, for a step that can be undone: decorate its
        compensation with `@fn.undo`; `step.rollback_all()` runs them."""

        def decorate(fn: Callable[..., Awaitable[T]]) -> StepFunction[T]:
            sf = StepFunction(self, fn, name or fn.__name__, None, False, config)
            sf._rollback = True
            return sf

        return decorate

    async def rollback_all(
        self, error: BaseException | None = None, continue_on_error: bool = False
    ) -> dict[str, Any]:
        """Runs the undo of every completed rollback step, newest first, each
        as a durable step named `<step>:undo`. What each undo returns is
        journaled (it must be JSON, as a step's result) and returned: a dict
        from the step's name to its undo's result, in the order they ran.
        With `continue_on_error`, every undo runs and the first failure is
        raised after them."""
        results: dict[str, Any] = {}
        failures: list[BaseException] = []
        while self._undo_stack:
            sf, value = self._undo_stack.pop()
            undo = sf._undo
            if undo is None:
                continue

            async def body(ctx: StepContext, undo: Callable[..., Awaitable[Any]] = undo, value: Any = value) -> Any:
                return await undo(error, value)

            try:
                results[sf.name] = await _run_step(
                    f"{sf.name}:undo", sf._config, body, getattr(undo, "__globals__", {})
                )
            except Exception as e:
                if not continue_on_error:
                    raise
                failures.append(e)
        if failures:
            raise failures[0]
        return results

    async def run_workflow(self, workflow: str, params: Any = None, *, name: str | None = None) -> Any:
        """Starts the deployed workflow `workflow` (in any language) as a
        child with `params` and returns its output, as one durable call. The
        child's error is raised with its type name. Needs `weft serve`."""
        caller = sys._getframe(1).f_globals
        return await _run_child(workflow, params, name, caller)

    async def sleep(self, name: str, duration: Duration) -> None:
        """Sleeps durably: `duration` in seconds, a string such as
        "10 seconds" or "2 hours", or a timedelta."""
        await (_api() if _sh.SHARED else durable).sleep(name, to_ms(duration, number_unit_ms=1000, what=f"sleep {name!r}"))
        if _sh.SHARED:
            _check()

    async def sleep_until(self, name: str, timestamp: datetime.datetime | int | float) -> None:
        """Sleeps durably until a datetime or a Unix time in seconds."""
        if isinstance(timestamp, datetime.datetime):
            if timestamp.tzinfo is None:
                timestamp = timestamp.replace(tzinfo=datetime.timezone.utc)
            unix_ms = int(timestamp.timestamp() * 1000)
        elif isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool):
            unix_ms = int(timestamp * 1000)
        else:
            raise TypeError(f"sleep_until {name!r}: expected a datetime or epoch seconds")
        await (_api() if _sh.SHARED else durable).sleep_until(name, max(unix_ms, 0))
        if _sh.SHARED:
            _check()

    async def wait_for_event(self, name: str, event_type: str, timeout: Duration = DEFAULT_EVENT_TIMEOUT) -> dict[str, Any]:
        """Waits for an event sent to this instance; returns
        `{"type", "payload", "timestamp"}`. Raises `WaitTimeoutError`."""
        timeout_ms = to_ms(timeout, number_unit_ms=1000, what=f"wait_for_event {name!r} timeout")
        try:
            e = await (_api() if _sh.SHARED else durable).wait_for_event(name, event_type, timeout_ms)
        except Err:
            if _sh.SHARED:
                _check()
            raise WaitTimeoutError(
                f"no event of type {event_type!r} arrived for {name!r} within its timeout"
            ) from None
        return {
            "type": e.event_type,
            "payload": json.loads(e.payload),
            "timestamp": datetime.datetime.fromtimestamp(e.timestamp_ms / 1000, tz=datetime.timezone.utc),
        }


async def _run_child(workflow: str, params: Any, name: str | None, module_globals: Mapping[str, Any]) -> Any:
    _check_json(params, f"the params of workflow {workflow!r}")
    try:
        out = await (_api() if _sh.SHARED else durable).run_workflow(name or workflow, workflow, json.dumps(params))
    except Err as e:
        if _sh.SHARED:
            _check()
        raise _rebuild(e.value, module_globals) from None
    return json.loads(out)


class WorkflowEntrypoint:
    """Base class of a workflow: subclass it and define
    `async def run(self, event, step)`."""

    def __init__(self, ctx: Any = None, env: Any = None) -> None:
        self.ctx = ctx
        self.env = env if env is not None else Env()

    async def run(self, event: dict[str, Any], step: WorkflowStep) -> Any:
        raise NotImplementedError("a workflow must define `async def run(self, event, step)`")
