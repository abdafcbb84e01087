"""`from workers.workflows import NonRetryableError`, as on Cloudflare."""

from weft import NonRetryableError, WaitTimeoutError

__all__ = ["NonRetryableError", "WaitTimeoutError"]
