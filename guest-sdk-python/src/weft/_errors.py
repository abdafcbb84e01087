"""The exceptions a workflow sees, shared by the workflow API and the I/O
module (which would otherwise import each other)."""

from __future__ import annotations


class NonRetryableError(Exception):
    """Raised in a step to fail it at once, without further attempts."""


class WaitTimeoutError(Exception):
    """Raised by `step.wait_for_event` when no event arrived in time."""


class StepError(Exception):
    """A step's final error whose original type is not known here.

    `type(e).__name__` is the original type name.
    """
