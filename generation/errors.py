"""The API's errors, in OpenAI's envelope: {"error": {"message", "type", "param", "code"}}, all four keys always.

Every failure on /v1 (our own, DRF's, Django's 404/500, anything unhandled) leaves through here, so a client never
sees HTML or a stack trace.
"""
import logging

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


class APIError(Exception):
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
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


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
    return exc.status_code, envelope(message, type="invalid_request_error",
                                     code=code if isinstance(code, str) else None)


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
