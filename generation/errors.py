"""The API's errors: the registry of every error code, the exceptions that raise them, and OpenAI's envelope
{"error": {"message", "type", "param", "code"}} (all four keys always).

The registry (CODES) is the one list of what the API can answer: APIError refuses a code it lacks, the OpenAPI
description's `x-error-codes` and the reference page's table are generated from it (generation/api/openapi.py,
/docs/api/), and tests/test_architecture.py fails when any module raises a code that is not here. To add a code:
add an ErrorCode row below, raise it (`APIError(message, code="...")` takes its status and type from the row).

Every failure on /v1 (our own, DRF's, Django's 404/500, anything unhandled) leaves through here, so a client never
sees HTML or a stack trace. The API, the request pipeline and the playground all raise these.
"""
import logging
from dataclasses import dataclass

from django.core.exceptions import (
    DisallowedHost,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404, JsonResponse
from django.shortcuts import render
from rest_framework import exceptions as drf
from rest_framework.response import Response

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErrorCode:
    """One answer the API can give: HTTP status, OpenAI's `error.type`, `error.code` (None: OpenAI sends null), and
    when it happens (the docs' wording)."""

    status: int
    type: str
    code: str | None
    when: str


_REQ, _SERVER, _RATE, _QUOTA = "invalid_request_error", "server_error", "requests", "insufficient_quota"

REGISTRY: tuple[ErrorCode, ...] = (
    ErrorCode(400, _REQ, "invalid_json", "The body is not a JSON object (or not valid JSON)."),
    ErrorCode(400, _REQ, "invalid_request_body",
              "The body could not be read: a malformed multipart form, too many fields or files."),
    ErrorCode(400, _REQ, "missing_required_parameter", "A required field (prompt, image) is missing."),
    ErrorCode(400, _REQ, "unknown_parameter", "A field the endpoint (or the model) does not take."),
    ErrorCode(400, _REQ, "invalid_type", "A field has the wrong type (e.g. a string for n)."),
    ErrorCode(400, _REQ, "invalid_size", "The model does not offer this size; the message lists those it does."),
    ErrorCode(400, _REQ, "invalid_parameter",
              "Any other value the model does not accept; the message names the allowed values."),
    ErrorCode(400, _REQ, "string_above_max_length", "prompt or user is longer than allowed."),
    ErrorCode(400, _REQ, "invalid_image_format", "An uploaded image is not PNG/JPEG/WebP, or not a type the model "
                                                 "accepts (checked by content, not by name)."),
    ErrorCode(400, _REQ, "invalid_image", "An uploaded image could not be decoded."),
    ErrorCode(400, _REQ, "invalid_image_dimensions",
              "The model needs a square image, or the mask is not the image's size."),
    ErrorCode(400, _REQ, "image_too_large", "An input image is over the model's byte or pixel limit."),
    ErrorCode(400, _REQ, "invalid_mask", "The mask has no alpha channel."),
    ErrorCode(400, _REQ, "invalid_image_url", "The `image` URL could not be fetched as an image."),
    ErrorCode(400, _REQ, "content_policy_violation",
              "The prompt was refused by the safety system; nothing is charged."),
    ErrorCode(400, _REQ, "invalid_idempotency_key",
              "The Idempotency-Key header is empty, over 255 characters or not printable ASCII."),
    ErrorCode(400, _REQ, "cost_limit_exceeded",
              "The request's price (for \"auto\" sizes or qualities, its dearest outcome) is over its `max_cost` "
              "or the key's default ceiling; the message names the price. Nothing is generated or charged."),
    ErrorCode(400, _REQ, "invalid_host", "The Host header names a host this server does not answer for."),
    ErrorCode(401, _REQ, None, "No API key: send `Authorization: Bearer <key>`."),
    ErrorCode(401, _REQ, "invalid_api_key", "The API key is unknown, revoked or expired."),
    ErrorCode(401, _REQ, "missing_scope",
              "The key is restricted and lacks the permission this endpoint needs; the message names it."),
    ErrorCode(403, _REQ, "permission_denied", "The key may not perform this request."),
    ErrorCode(403, _REQ, "model_not_allowed", "The key's allowed models do not include this model."),
    ErrorCode(403, _REQ, "https_required",
              "The request came over plain HTTP: the API answers HTTPS only, and refuses rather than redirects "
              "(the key was already sent in clear text; rotate it if it may have been seen)."),
    ErrorCode(404, _REQ, "model_not_found",
              "The model does not exist, is not enabled here, or is retired (the message names its replacement)."),
    ErrorCode(404, _REQ, "not_found", "No such object (an image, a record)."),
    ErrorCode(404, _REQ, "unknown_url", "No such URL under /v1."),
    ErrorCode(405, _REQ, "method_not_allowed", "The URL exists but not with this HTTP method."),
    ErrorCode(409, _REQ, "idempotency_key_reused", "The Idempotency-Key was already used with a different request."),
    ErrorCode(409, _REQ, "idempotency_request_in_progress",
              "A request with this Idempotency-Key is still running; retry later to get its response."),
    ErrorCode(409, _REQ, "job_not_cancellable",
              "The image job is already running or finished; only a queued job can be cancelled."),
    ErrorCode(410, _REQ, "url_expired", "The image URL has expired (image URLs are valid for 60 minutes)."),
    ErrorCode(413, _REQ, "request_too_large", "The request body is over the size limit."),
    ErrorCode(415, _REQ, "unsupported_media_type",
              "Wrong Content-Type: JSON for generations, multipart/form-data for edits and variations."),
    ErrorCode(429, _RATE, "rate_limit_exceeded",
              "Over the key's or the organization's requests per minute (or the upstream is limiting); honour "
              "retry-after."),
    ErrorCode(429, _QUOTA, "insufficient_quota",
              "A monthly spend limit is reached or the organization's billing refuses more use; retrying will not "
              "help (x-should-retry: false)."),
    ErrorCode(500, _SERVER, None, "Our error; retry, and quote the x-request-id if it persists."),
    ErrorCode(502, _SERVER, "upstream_error", "The upstream provider failed; nothing was charged. Retry."),
    ErrorCode(503, _SERVER, "provider_unavailable",
              "Every upstream that serves the model is unavailable right now (circuit open); retry after retry-after."),
    ErrorCode(503, _SERVER, "model_unavailable", "The model cannot be served at this size and quality right now."),
    ErrorCode(503, _SERVER, "job_queue_unavailable",
              "An async job (`Prefer: respond-async`) could not be queued; retry, or send the request without it."),
    ErrorCode(503, _SERVER, "idempotency_unavailable", "Idempotent requests are briefly unavailable; retry."),
    ErrorCode(504, _SERVER, "upstream_timeout",
              "The upstream provider did not answer in time; nothing was charged."),
)

CODES: dict[str, ErrorCode] = {row.code: row for row in REGISTRY if row.code is not None}

# tests/conftest.py turns this on: an unregistered code then raises instead of being logged.
STRICT = False


class UnregisteredErrorCode(LookupError):
    """An error code the registry lacks (a programming error: add an ErrorCode row)."""


def registered(code: str | None) -> str | None:
    """`code`, checked against the registry. Unknown: UnregisteredErrorCode when STRICT (tests), else logged."""
    if code is not None and code not in CODES:
        if STRICT:
            raise UnregisteredErrorCode(f"error code {code!r} is not in generation/errors.py REGISTRY")
        log.error("Unregistered API error code %r (add it to generation/errors.py REGISTRY)", code)
    return code


class APIError(Exception):
    """An answer in OpenAI's envelope. `code` must be in the registry; its row gives the status and type unless the
    subclass or the caller says otherwise."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
            row = CODES.get(registered(code))
            if row is not None and status is None and type(self) is APIError:
                self.status, self.type = row.status, row.type
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict:
        return envelope(self.message, type=self.type, param=self.param, code=self.code)


class InvalidRequest(APIError):
    status = 400
    code = "invalid_parameter"


class NotFound(APIError):
    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str):
        super().__init__(
            f"The model '{model}' does not exist or you do not have access to it. "
            "GET /v1/models lists the models you can use.",
            param="model",
        )


class ContentPolicyViolation(APIError):
    status = 400
    code = "content_policy_violation"


class RateLimited(APIError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class InsufficientQuota(APIError):
    """A spend limit or the organization's billing state refuses the request: retrying will not help."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message: str):
        super().__init__(message, headers={"x-should-retry": "false"})


class ServerError(APIError):
    status = 500
    type = "server_error"
    code = None


class UpstreamError(APIError):
    """The upstream failed in a way the client can retry (502 bad gateway, 503 unavailable, 504 timeout)."""

    status = 502
    type = "server_error"
    code = "upstream_error"


def envelope(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error body; `code` is checked against the registry."""
    return {"error": {"message": message, "type": type, "param": param, "code": registered(code)}}


def _from_drf(exc: drf.APIException) -> tuple[int, dict]:
    detail = exc.detail
    if isinstance(detail, (list, dict)):
        message = "; ".join(str(v) for v in (detail.values() if isinstance(detail, dict) else detail))
    else:
        message = str(detail)
    code = getattr(detail, "code", None)
    if isinstance(exc, drf.NotAuthenticated):
        return 401, envelope(message, type="invalid_request_error", code=None)
    if isinstance(exc, drf.AuthenticationFailed):
        return 401, envelope(message, type="invalid_request_error", code=code or "invalid_api_key")
    if isinstance(exc, drf.ParseError):
        if message.startswith("JSON parse error"):
            return 400, envelope(
                f"We could not parse the JSON body of your request ({message[len('JSON parse error - '):]}). The "
                "body must be a JSON object sent with Content-Type: application/json.",
                type="invalid_request_error", code="invalid_json",
            )
        return 400, envelope(f"We could not parse the body of your request: {message}", type="invalid_request_error",
                             code="invalid_request_body")
    if isinstance(exc, drf.UnsupportedMediaType):
        return 415, envelope(
            f"{message} Send JSON with Content-Type: application/json.", type="invalid_request_error",
            code="unsupported_media_type",
        )
    if isinstance(exc, drf.MethodNotAllowed):
        return 405, envelope(message, type="invalid_request_error", code="method_not_allowed")
    if isinstance(exc, drf.PermissionDenied):
        return 403, envelope(message, type="invalid_request_error", code="permission_denied")
    if isinstance(exc, drf.NotFound):
        return 404, envelope(message, type="invalid_request_error", code="not_found")
    if isinstance(exc, drf.Throttled):
        return 429, envelope(message, type="requests", code="rate_limit_exceeded")
    # DRF's own detail codes ("parse_error", "not_authenticated", ...) are not ours: only registered ones pass.
    return exc.status_code, envelope(message, type="invalid_request_error",
                                     code=code if isinstance(code, str) and code in CODES else None)


def error_parts(exc: Exception, *, where: str = "", request_id: str = "?") -> tuple[int, dict, dict[str, str]]:
    """(status, envelope, headers) for any exception raised while serving /v1; unexpected ones are logged."""
    headers: dict[str, str] = {}
    if isinstance(exc, APIError):
        return exc.status, exc.body(), dict(exc.headers)
    if isinstance(exc, drf.APIException):
        status, body = _from_drf(exc)
        if getattr(exc, "wait", None):
            headers["retry-after"] = str(int(exc.wait))
        return status, body, headers
    if isinstance(exc, RequestDataTooBig):
        return 413, envelope("Request body too large.", type="invalid_request_error", code="request_too_large"), headers
    if isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        return 400, envelope(f"The form has too many fields or files ({exc}).", type="invalid_request_error",
                             code="invalid_request_body"), headers
    if isinstance(exc, Http404):
        return 404, envelope("Not found.", type="invalid_request_error", code="not_found"), headers
    if isinstance(exc, DisallowedHost):
        return 400, envelope("Invalid Host header: this server does not answer for that host name. Send the request "
                             "to the API's own address.", type="invalid_request_error", code="invalid_host"), headers
    if isinstance(exc, SuspiciousOperation):
        return 400, envelope(f"The request could not be read: {str(exc)[:200] or type(exc).__name__}.",
                             type="invalid_request_error", code="invalid_request_body"), headers
    log.error("Unhandled error in %s (request %s)", where, request_id, exc_info=exc)
    return 500, envelope(
        "The server had an error while processing your request. Sorry about that! You can retry your request, "
        "or contact us if the error persists (include the request ID from the x-request-id header).",
        type="server_error",
    ), headers


def api_exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every exception raised in an API view becomes an enveloped response."""
    request = context.get("request")
    status, body, headers = error_parts(exc, where=context.get("view").__class__.__name__,
                                        request_id=getattr(request, "request_id", "?"))
    return Response(body, status=status, headers=headers)


def error_response(exc: Exception, request=None) -> JsonResponse:
    """The enveloped JsonResponse for `exc` (views served without DRF's request cycle)."""
    status, body, headers = error_parts(exc, where=request.path if request is not None else "",
                                        request_id=getattr(request, "request_id", "?"))
    return JsonResponse(body, status=status, headers=headers)


def _is_api(request) -> bool:
    return request.path.startswith("/v1/") or request.path == "/v1"


def handler404(request, exception=None):
    if _is_api(request):
        return JsonResponse(
            envelope(f"Invalid URL ({request.method} {request.path}).", type="invalid_request_error",
                     code="unknown_url"),
            status=404,
        )
    return render(request, "404.html", status=404)


def handler500(request):
    if _is_api(request):
        return JsonResponse(
            envelope(
                "The server had an error while processing your request. Sorry about that! You can retry your request, "
                "or contact us if the error persists.",
                type="server_error",
            ),
            status=500,
        )
    return render(request, "500.html", status=500)


class PermissionDenied(APIError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"
