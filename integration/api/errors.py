"""Every error of the service API has one shape:

``{"error": {"code": "...", "message": "...", "store_error": {...}}}`` — ``code`` is stable and
meant for programs, ``message`` for people, ``store_error`` (only when a store was involved)
is what the store said or why it could not be reached.
"""

from __future__ import annotations

from flask import Response, json
from werkzeug.exceptions import HTTPException

from ..magento import errors as magento
from ..stores import NotLinked

#: Our code for werkzeug's own errors (unknown route, wrong method, body too large ...).
HTTP_CODES = {
    400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "body_too_large", 415: "unsupported_media_type", 429: "rate_limited",
    500: "internal_error", 502: "bad_gateway", 503: "unavailable", 504: "gateway_timeout",
}


class ApiProblem(HTTPException):
    """An API refusal: HTTP status ``code``, our ``error_code``, a message, extra headers."""

    code = 400
    error_code = "bad_request"

    def __init__(self, message: str, *, error_code: str | None = None, status: int | None = None,
                 store_error: dict | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        if status is not None:
            self.code = status
        if error_code is not None:
            self.error_code = error_code
        self.store_error = store_error
        self.extra_headers = headers or {}


class Unauthenticated(ApiProblem):
    code, error_code = 401, "unauthenticated"

    def __init__(self, message: str, *, error_code: str | None = None):
        # RFC 6750: say how to authenticate, and that this token was not good.
        # A request without any key gets no error code (RFC 6750 3.1); error_code None means that one.
        challenge = 'Bearer realm="api"' + (', error="invalid_token"' if error_code not in (None, "unauthenticated")
                                            else "")
        super().__init__(message, error_code=error_code, headers={"WWW-Authenticate": challenge})


class InsufficientScope(ApiProblem):
    code, error_code = 403, "insufficient_scope"

    def __init__(self, scope: str):
        challenge = f'Bearer realm="api", error="insufficient_scope", scope="{scope}"'
        super().__init__(f"this API key lacks the {scope} scope", headers={"WWW-Authenticate": challenge})


class NotFound(ApiProblem):
    code, error_code = 404, "not_found"


class InvalidRequest(ApiProblem):
    code, error_code = 400, "invalid_request"


class UnknownEvent(ApiProblem):
    code, error_code = 400, "unknown_event"


class RateLimited(ApiProblem):
    code, error_code = 429, "rate_limited"

    def __init__(self, limit, retry_after: int):
        super().__init__(f"rate limit exceeded: {limit} for this key (or, without a key, this address)",
                         headers={"Retry-After": str(retry_after)})


class StoreBusy(ApiProblem):
    code, error_code = 429, "store_busy"

    def __init__(self, retry_after: int):
        super().__init__("too many calls to this store at once; retry shortly",
                         headers={"Retry-After": str(retry_after)})


#: Most specific first: (type, HTTP status, code).
_STORE_PROBLEMS: list[tuple[type[magento.MagentoError], int, str]] = [
    (NotLinked, 409, "store_not_linked"),
    (magento.TokenRevoked, 503, "store_token_revoked"),
    (magento.StoreTimeout, 504, "store_timeout"),
    (magento.StoreUnreachable, 502, "store_unreachable"),
    (magento.UnsafeStoreURL, 502, "store_address_refused"),
    (magento.BadStoreResponse, 502, "store_bad_response"),
    (magento.SignatureRejected, 502, "store_signature_rejected"),
    (magento.MagentoError, 502, "store_error"),
]


def store_problem(exc: magento.MagentoError, headers: dict[str, str] | None = None) -> ApiProblem:
    """Our error for a store that could not be reached or refused us."""
    for cls, status, code in _STORE_PROBLEMS:
        if isinstance(exc, cls):
            break
    return ApiProblem(exc.message, error_code=code, status=status, headers=headers, store_error={
        "type": type(exc).__name__, "message": exc.message, "hint": exc.hint or None, "status": exc.status})


def render(exc: HTTPException) -> Response:
    """The JSON answer for any HTTP error raised while serving the API."""
    status = exc.code or 500
    error = {"code": getattr(exc, "error_code", None) or HTTP_CODES.get(status, "error"),
             "message": exc.description or exc.name}
    if getattr(exc, "store_error", None):
        error["store_error"] = exc.store_error
    response = Response(json.dumps({"error": error}), status, content_type="application/json")
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    for name, value in getattr(exc, "extra_headers", {}).items():
        response.headers[name] = value
    if status == 429 and "Retry-After" not in response.headers:
        response.headers["Retry-After"] = "1"
    return response
