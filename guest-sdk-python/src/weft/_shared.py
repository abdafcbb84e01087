"""Runs that share an interpreter (`isolation = "shared"`).

In the default mode the component runs one workflow instance, and the
SDK's durable calls are the functions of the `durable` import. In the
shared mode the host calls `run-shared` once per run, many at once, each
with a `run` resource whose methods are the same calls for that run. The
SDK keeps the run of the code that runs now in a context variable (each
`run-shared` call is a component-model task with a context of its own, and
asyncio tasks inherit it), so that the same SDK code serves both modes.

What each run keeps for itself: its workflow object and step calls (as in
the default mode), the step config id it registered, and a `random`
generator seeded from the run's own journaled randomness. The host charges
CPU time, and answers WASI's clocks and randomness, for the run the guest
says it runs: `resume` is called each time the event loop resumes a run's
task.
"""

from __future__ import annotations

import os
import random
from contextvars import ContextVar
from typing import Any

import componentize_py_async_support as _cpa
from wit_world.imports import durable


class RunStopped(BaseException):
    """The host stopped this run (its instance was evicted, paused, upgraded
    or failed; it is replayed from its journal where it goes on). Raised at
    the run's next durable call; a `BaseException`, so that workflow code's
    `except Exception` does not swallow it."""


class RunState:
    """One run as the SDK sees it."""

    __slots__ = ("api", "shared", "config", "random", "stopped", "fresh")

    def __init__(self, api: Any, shared: bool) -> None:
        # `durable` (the module) in the default mode, the run's `run`
        # resource in the shared one: the same calls either way.
        self.api = api
        self.shared = shared
        # The default step config's id and effective config, once registered.
        self.config: tuple[int, dict[str, Any]] | None = None
        self.random: random.Random | None = None
        # What `resume` said when the event loop last resumed the run, and
        # whether no `check` has used it yet.
        self.stopped = False
        self.fresh = False


_ALONE = RunState(durable, False)
_current: ContextVar[RunState] = ContextVar("weft_run", default=_ALONE)


def current() -> RunState:
    return _current.get()


def api() -> Any:
    """The durable calls of the run that runs now."""
    return _current.get().api


def check() -> None:
    """After a durable call returns: raises `RunStopped` if the host stopped
    the run meanwhile (what the call returned then means nothing)."""
    st = _current.get()
    if not st.shared:
        return
    # Right after the event loop resumed the run (the call waited), what
    # `resume` said then holds for what the call returned; a call that
    # returned at once asks.
    if st.fresh:
        st.fresh = False
        stopped = st.stopped
    else:
        stopped = st.api.resume()
    if stopped:
        raise RunStopped()


def stopped_filler(name: str) -> bool:
    """Whether an error a call returned is what a stopped run's calls
    return; raises `RunStopped` if so."""
    if name == "RunStopped":
        check()
    return False


def enter(run: Any) -> RunState:
    """Makes `run` the current run of this `run-shared` task. The first
    time, installs what the shared mode needs (a default-mode instance
    never touches it: every object it touches costs it a copy-on-write
    page fault)."""
    global _installed, SHARED
    if not _installed:
        _install_poll_hook()
        _route_random()
        _installed = True
        SHARED = True
    st = RunState(run, True)
    _current.set(st)
    # The event loop resumes this task's code only in polls of its own
    # future state: mark the run there.
    setattr(_cpa._future_state.get(), "_weft_run", st)
    run.resume()
    # Seeded from the run's randomness, which the host journals per run.
    st.random = random.Random(int.from_bytes(os.urandom(16), "little"))
    return st


def _install_poll_hook() -> None:
    loop: Any = _cpa._loop
    if getattr(loop, "_weft_poll", False):
        return
    poll = loop.poll

    def poll_run(future_state: Any) -> None:
        st = getattr(future_state, "_weft_run", None)
        if st is not None:
            st.stopped = st.api.resume()
            st.fresh = True
        poll(future_state)

    loop.poll = poll_run
    loop._weft_poll = True


class _RunRandom(random.Random):
    """`random`'s module-level generator, which every run shares: its draws
    come from the current run's own generator, when there is one."""

    def random(self) -> float:
        r = _current.get().random
        return r.random() if r is not None else super().random()

    def getrandbits(self, k: int) -> int:
        r = _current.get().random
        return r.getrandbits(k) if r is not None else super().getrandbits(k)

    def randbytes(self, n: int) -> bytes:
        r = _current.get().random
        return r.randbytes(n) if r is not None else super().randbytes(n)

    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        r = _current.get().random
        return r.gauss(mu, sigma) if r is not None else super().gauss(mu, sigma)


def _route_random() -> None:
    """Routes `random`'s module functions to the current run's generator.
    They are bound methods of one shared instance, whose class this
    changes, so that functions written in Python (`choice`, `randint`,
    `shuffle`, ...) draw from the run's generator even where a module
    imported them by name before the SDK; those written in C (`random`,
    `getrandbits`) are bound again here."""
    inst: Any = getattr(random, "_inst", None)
    if inst is None or type(inst) is not random.Random:
        return
    inst.__class__ = _RunRandom
    for name in ("random", "getrandbits", "randbytes", "gauss"):
        if hasattr(random, name):
            setattr(random, name, getattr(inst, name))


_installed = False
# Whether this interpreter runs shared runs. Until it does, the SDK calls
# `durable` as it always did, touching nothing of this module's.
SHARED = False
