"""The one error tree of imagegate.

Every failure the gateway reports is one of these classes. Surfaces render them in their own
shape (OpenAI ``{"error": {...}}`` or Google ``{"error": {"code", "message", "status"}}``);
adapters translate upstream failures into the ``UpstreamError`` branch at their boundary
(``raise ... from exc``), so nothing outside ``providers/`` ever looks at an upstream's body.

    ImagegateError                      500 server_error
    ├── RequestError                    400 invalid_request_error   (the caller's fault)
    │   ├── InvalidRequest              400   names the offending ``param``
    │   ├── PayloadTooLarge             413
    │   ├── AuthenticationFailed        401
    │   ├── PermissionDenied            403
    │   ├── NotFound                    404
    │   │   ├── ModelNotFound           404
    │   │   └── TaskNotFound            404
    │   ├── IdempotencyConflict         409   the ``Idempotency-Key`` names another request
    │   ├── Conflict                    409   a name taken, a read-only object
    │   ├── RateLimited                 429
    │   └── InsufficientQuota           429
    └── UpstreamError                   502 upstream_error          (the upstream's outcome)
        ├── UpstreamUnavailable         503   retryable: connection error, 5xx
        ├── UpstreamTimeout             504   retryable
        ├── UpstreamRateLimited         503   retryable: the upstream answered 429
        ├── UpstreamAuthFailed          502   retryable: the channel's key is bad (logged, never echoed)
        ├── UpstreamBadResponse         502   an answer we cannot read
        ├── UpstreamRejected            400   the upstream refused the request as invalid
        ├── ContentRefused              400   moderation / safety refusal
        └── NoImageReturned             502   a "successful" answer that carries no image

``retryable`` means "another channel may succeed": the router fails over on those and never on
the others (a request the upstream called invalid is invalid everywhere).
"""

from __future__ import annotations

from typing import ClassVar


class ImagegateError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code  # type: ignore[misc]  # instance override of the class default

    def to_openai(self, request_id: str | None = None) -> dict[str, object]:
        error: dict[str, object] = {"message": self.message, "type": self.type, "param": self.param,
                                    "code": self.code}
        if request_id is not None:
            error["request_id"] = request_id
        return {"error": error}


class RequestError(ImagegateError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidRequest(RequestError):
    code = "invalid_value"


class PayloadTooLarge(RequestError):
    status = 413
    code = "request_too_large"


class AuthenticationFailed(RequestError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(RequestError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFound(RequestError):
    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class TaskNotFound(NotFound):
    code = "task_not_found"


class IdempotencyConflict(RequestError):
    status = 409
    code = "idempotency_key_reused"


class Conflict(RequestError):
    """The request collides with the state of an object (a name taken, a read-only object)."""

    status = 409
    code = "conflict"


class RateLimited(RequestError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class InsufficientQuota(RequestError):
    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class UpstreamError(ImagegateError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    status = 503
    code = "upstream_unavailable"
    retryable = True


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    retryable = True


class UpstreamRateLimited(UpstreamError):
    status = 503
    code = "upstream_rate_limited"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after
        """Seconds the upstream asked us to wait (its ``Retry-After``), when it said."""


class UpstreamAuthFailed(UpstreamError):
    code = "upstream_auth_failed"
    retryable = True


class UpstreamBadResponse(UpstreamError):
    code = "upstream_bad_response"


class UpstreamRejected(UpstreamError):
    status = 400
    type = "invalid_request_error"
    code = "upstream_rejected"


class ContentRefused(UpstreamError):
    """Moderation or safety refusal. ``reason`` is the upstream's own word for it
    (Gemini's ``finishReason``/``blockReason``, BFL's status), so the Gemini surface can
    render the refusal the way Google clients expect instead of as an error."""

    status = 400
    type = "invalid_request_error"
    code = "content_policy_violation"

    def __init__(self, message: str, *, reason: str = "SAFETY", prompt_blocked: bool = False,
                 **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.reason = reason
        self.prompt_blocked = prompt_blocked


class NoImageReturned(UpstreamError):
    code = "no_image"

    def __init__(self, message: str, *, reason: str = "NO_IMAGE", **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.reason = reason
