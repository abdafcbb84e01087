"""Outgoing HTTP (`fetch`) and secrets for step bodies."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from componentize_py_types import Err
from wit_world.imports import weft_workflow_types as types

from ._duration import Duration, to_ms
from ._errors import NonRetryableError
from wit_world.imports import durable

from . import _shared as _sh
from ._shared import api as _api, check as _check, stopped_filler as _stopped_filler


class FetchError(Exception):
    """`fetch` got no response."""


class FetchNotInStep(FetchError, NonRetryableError):
    """`fetch` was called outside a step body."""


class FetchDenied(FetchError, NonRetryableError):
    """The host is not on the workflow's allow-list."""


class FetchInvalidRequest(FetchError, NonRetryableError):
    """The request is malformed."""


class FetchTimeout(FetchError):
    """No response within the timeout."""


class FetchFailed(FetchError):
    """Connecting or reading failed."""


class FetchResponse:
    """The answer to `fetch`, shaped like the Workers `Response`."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self._body = body

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    async def bytes(self) -> bytes:
        return self._body

    async def text(self) -> str:
        return self._body.decode("utf-8")

    async def json(self) -> Any:
        return json.loads(self._body)

    def __repr__(self) -> str:
        return f"<FetchResponse {self.status}>"


async def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: str | bytes | None = None,
    timeout: Duration | None = None,
) -> FetchResponse:
    """Sends an HTTP request from a step body to an allowed host."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    req = types.HttpRequest(
        method,
        url,
        list((headers or {}).items()),
        data,
        None if timeout is None else to_ms(timeout, number_unit_ms=1000, what="fetch timeout"),
    )
    try:
        resp = await (_api() if _sh.SHARED else durable).fetch(req)
    except Err as e:
        if _sh.SHARED:
            _check()
        err = e.value
        cls: type[FetchError] = {
            "FetchError_NotInStep": FetchNotInStep,
            "FetchError_Denied": FetchDenied,
            "FetchError_InvalidRequest": FetchInvalidRequest,
            "FetchError_Timeout": FetchTimeout,
        }.get(type(err).__name__, FetchFailed)
        raise cls(str(err.value)) from None
    return FetchResponse(resp.status, resp.headers, bytes(resp.body))


def secret(name: str) -> str:
    """Reads a secret or config value of the workflow; only in step bodies."""
    try:
        return str((_api() if _sh.SHARED else durable).secret(name))
    except Err as e:
        info: types.ErrorInfo = e.value
        if _sh.SHARED:
            _stopped_filler(info.name)
        if info.name == "NotInStep":
            raise RuntimeError(info.message) from None
        raise KeyError(info.message) from None


class Env:
    """`self.env`: secrets as attributes, as Cloudflare bindings are."""

    def __getattr__(self, name: str) -> str:
        if name.startswith("__"):
            raise AttributeError(name)
        return secret(name)
