"""Beginning a step: its config, parsed into the host's record with the
defaults filled in, and the `step-begin` call of the run that runs now."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from wit_world.imports import durable
from wit_world.imports import weft_workflow_types as types

from . import _shared as _sh
from ._duration import to_ms
from ._shared import api as _api, current as _current_run

DEFAULT_RETRIES: dict[str, Any] = {"limit": 5, "delay": "10 seconds", "backoff": "exponential"}
DEFAULT_TIMEOUT = "10 minutes"

_default_config: tuple[int, dict[str, Any]] | None = None


def _begin(name: str, config: Mapping[str, Any] | None) -> tuple[types.StepStart, dict[str, Any]]:
    """Calls `step-begin` for a step; returns its answer and the step's
    effective config. A step with the default config passes the config's id
    instead of the config: componentize-py spends ~2 µs lowering the
    record on every call."""
    global _default_config
    shared = _sh.SHARED
    api = _api() if shared else durable
    if config:
        wit, effective = _parse_step_config(name, config)
        return api.step_begin(name, wit), effective
    # The default step config, worked out once per instance (per run when
    # runs share the interpreter; most steps take it), and its id from
    # `register-step-config`.
    if shared:
        run = _current_run()
        if run.config is None:
            wit, effective = _parse_step_config(name, {})
            run.config = (api.register_step_config(wit), effective)
        config_id, effective = run.config
    else:
        if _default_config is None:
            wit, effective = _parse_step_config(name, {})
            _default_config = (durable.register_step_config(wit), effective)
        config_id, effective = _default_config
    return api.step_begin_with(name, config_id), effective


def _parse_step_config(name: str, config: Mapping[str, Any]) -> tuple[types.StepConfig, dict[str, Any]]:
    config = dict(config)
    unknown = set(config) - {"retries", "timeout"}
    if unknown:
        raise ValueError(f"step {name!r}: unknown config keys {sorted(unknown)}")
    retries = dict(DEFAULT_RETRIES)
    retries.update(config.get("retries") or {})
    bad = set(retries) - {"limit", "delay", "backoff"}
    if bad:
        raise ValueError(f"step {name!r}: unknown retries keys {sorted(bad)}")
    limit = retries["limit"]
    if limit == math.inf:
        limit = 2**32 - 1
    if not isinstance(limit, int) or limit < 0:
        raise ValueError(f"step {name!r}: retries.limit must be a non-negative int")
    backoffs = {
        "constant": types.Backoff.CONSTANT,
        "linear": types.Backoff.LINEAR,
        "exponential": types.Backoff.EXPONENTIAL,
    }
    if retries["backoff"] not in backoffs:
        raise ValueError(f"step {name!r}: retries.backoff must be constant, linear or exponential")
    delay_ms = to_ms(retries["delay"], number_unit_ms=1, what=f"step {name!r} retries.delay")
    timeout_ms = to_ms(config.get("timeout", DEFAULT_TIMEOUT), number_unit_ms=1, what=f"step {name!r} timeout")
    effective = {"retries": {**retries, "limit": limit}, "timeout": config.get("timeout", DEFAULT_TIMEOUT)}
    wit = types.StepConfig(
        types.RetryPolicy(min(limit, 2**32 - 1), delay_ms, backoffs[retries["backoff"]]), timeout_ms
    )
    return wit, effective
