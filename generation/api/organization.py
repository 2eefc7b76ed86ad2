"""The audit API: what an organization used and paid, from the ledger, in the shape of OpenAI's Usage and Costs API.

    GET /v1/organization/usage/images   images and requests per time bucket (group_by model, api_key, provider, size)
    GET /v1/organization/costs          money per time bucket (same group_by, plus line_item)
    GET /v1/organization/usage/records  the per-request ledger rows, newest first, with a keyset cursor

Tenant scoping: every read goes through `LedgerEntry.objects.for_organization(request.user.organization)`. An
`api_key_id(s)` filter naming a key of another organization is not an error: it matches no rows (so a caller learns
nothing about other organizations' keys, not even that an id exists).

Unknown query parameters are refused (400 unknown_parameter) rather than ignored: a misspelt `end_tme` silently
widening an audit's range would be worse than an error. The queries are in billing/usage/audit.py.
"""
from __future__ import annotations

import re

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response

from accounts import keys
from billing.cursors import BadCursor
from billing.models import LedgerEntry
from billing.usage import audit as q
from generation.api import openapi
from generation.api.base import V1APIView, require_scope
from generation.errors import InvalidRequest


class ReadsUsage(BasePermission):
    """The key must have the `usage.read` scope (401 missing_scope otherwise, as OpenAI answers)."""

    def has_permission(self, request, view) -> bool:
        api_key = getattr(request.user, "api_key", None)
        if api_key is not None:
            require_scope(api_key, keys.SCOPE_USAGE)
        return True

MAX_TIME = 32503680000  # 3000-01-01T00:00:00Z: bounds every unix-seconds parameter
MAX_STRING = 200
_INT = re.compile(r"^[0-9]{1,12}$")
STATUSES = [choice for choice, _ in LedgerEntry.Status.choices]


class _Params:
    """Strict reading of the query string: unknown names, repeats of single-valued names, NUL characters and
    malformed numbers are 400s naming the parameter and what it accepts."""

    def __init__(self, request, single: set[str], multi: set[str] = frozenset()):
        self.query = request.query_params
        allowed = single | multi
        for name in self.query.keys():
            if name not in allowed:
                raise InvalidRequest(f"Unknown parameter: '{name}'. This endpoint takes: "
                                     f"{', '.join(sorted(allowed))}.", param=name, code="unknown_parameter")
            values = self.query.getlist(name)
            if name in single and len(values) > 1:
                raise InvalidRequest(f"'{name}' may be given only once.", param=name)
            for value in values:
                if "\x00" in value or len(value) > MAX_STRING:
                    raise InvalidRequest(f"'{name}' must be a printable string of at most {MAX_STRING} characters.",
                                         param=name)

    def string(self, name: str) -> str | None:
        value = self.query.get(name)
        return value if value not in (None, "") else None

    def integer(self, name: str, *, lo: int, hi: int, default: int | None = None, what: str = "") -> int | None:
        raw = self.string(name)
        if raw is None:
            return default
        if not _INT.match(raw) or not lo <= int(raw) <= hi:
            raise InvalidRequest(f"'{name}' must be an integer from {lo} to {hi}{what}; got {raw!r}.", param=name)
        return int(raw)

    def listing(self, name: str) -> list[str]:
        """Repeated (`?group_by=model&group_by=size`) or comma-separated (`?group_by=model,size`) values."""
        out = []
        for value in self.query.getlist(name):
            out += [part.strip() for part in value.split(",") if part.strip()]
        return list(dict.fromkeys(out))


def _time_range(params: _Params) -> tuple[int, int]:
    if params.string("start_time") is None:
        raise InvalidRequest("Missing required parameter: 'start_time' (unix seconds, inclusive).",
                             param="start_time", code="missing_required_parameter")
    start = params.integer("start_time", lo=0, hi=MAX_TIME, what=" (unix seconds)")
    now = q.to_unix(timezone.now()) + 1
    end = params.integer("end_time", lo=1, hi=MAX_TIME, default=min(max(now, start + 1), MAX_TIME),
                         what=" (unix seconds)")
    if end <= start:
        raise InvalidRequest(f"'end_time' ({end}) must be after 'start_time' ({start}).", param="end_time")
    return start, end


def _key_ids(params: _Params, name: str) -> list[int] | None:
    values = params.listing(name)
    if not values:
        return None
    for value in values:
        if not _INT.match(value):
            raise InvalidRequest(f"'{name}' must be API key ids (integers, as `api_key_id` in results); "
                                 f"got {value!r}.", param=name)
    return [int(v) for v in values]


def _bucket_query(request, group_by_choices: dict) -> dict:
    params = _Params(request, single={"start_time", "end_time", "bucket_width", "limit", "page"},
                     multi={"group_by", "api_key_ids", "models"})
    start, end = _time_range(params)
    width = params.string("bucket_width") or "1d"
    if width not in q.BUCKET_SECONDS:
        raise InvalidRequest(f"Invalid 'bucket_width': {width!r}. bucket_width must be one of 1m, 1h, 1d.",
                             param="bucket_width")
    group_by = params.listing("group_by")
    for name in group_by:
        if name not in group_by_choices:
            raise InvalidRequest(f"Invalid 'group_by' value: {name!r}. group_by takes any of "
                                 f"{', '.join(group_by_choices)}.", param="group_by")
    limit = params.integer("limit", lo=1, hi=q.BUCKET_LIMIT_MAX[width], default=q.BUCKET_LIMIT_DEFAULT[width],
                           what=f" for bucket_width {width}")
    return {"organization": request.user.organization, "start_time": start, "end_time": end, "bucket_width": width,
            "group_by": group_by, "limit": limit, "page": params.string("page"),
            "api_key_ids": _key_ids(params, "api_key_ids"), "models": params.listing("models") or None}


def _run(function, **kwargs):
    try:
        return function(**kwargs)
    except BadCursor as exc:
        name = "cursor" if function is q.records_page else "page"
        detail = "" if str(exc) == "malformed" else f" {exc}"
        raise InvalidRequest(f"Invalid '{name}': pass back exactly the value of the previous page's "
                             f"{'next_cursor' if name == 'cursor' else 'next_page'}, with the same other "
                             f"parameters.{detail}", param=name) from exc


# --- OpenAPI --------------------------------------------------------------------------------------------------------

_STATUSES = [200, 400, 401, 403, 429, 500]
_ERRORS = {
    400: "A bad parameter (named in error.param): unknown, repeated, malformed, out of range, or a cursor this "
         "query did not produce; the message lists the allowed values.",
    401: "No API key, or an unknown or revoked one.",
    403: "The API key may not perform this request.",
    429: "Rate limit reached (rate_limit_exceeded); wait for retry-after.",
    500: "Internal error; retry, quoting x-request-id if it persists.",
}


def _responses(description: str) -> dict:
    responses = {200: OpenApiResponse(OpenApiTypes.OBJECT, description=description)}
    for status, text in _ERRORS.items():
        responses[status] = OpenApiResponse(openapi.ErrorSerializer, description=text)
    return responses


def _int_param(name: str, description: str, *, lo: int, hi: int, required: bool = False) -> OpenApiParameter:
    return OpenApiParameter(name, {"type": "integer", "minimum": lo, "maximum": hi}, OpenApiParameter.QUERY,
                            required=required, description=description)


def _list_param(name: str, items: dict, description: str) -> OpenApiParameter:
    return OpenApiParameter(name, {"type": "array", "items": items}, OpenApiParameter.QUERY, style="form",
                            explode=True, description=description)


def _bucket_parameters(group_by_choices) -> list[OpenApiParameter]:
    return [
        _int_param("start_time", "Start of the range, unix seconds (inclusive).", lo=0, hi=MAX_TIME, required=True),
        _int_param("end_time", "End of the range, unix seconds (exclusive); default now.", lo=1, hi=MAX_TIME),
        OpenApiParameter("bucket_width", {"type": "string", "enum": list(q.BUCKET_SECONDS)}, OpenApiParameter.QUERY,
                         description="Width of a bucket: 1m, 1h or 1d (default). Buckets are aligned to the epoch "
                                     "(days start 00:00 UTC); the first and last are clipped to the range."),
        _list_param("group_by", {"type": "string", "enum": list(group_by_choices)},
                    "Split each bucket's results by these fields (repeat the parameter or comma-separate)."),
        _list_param("api_key_ids", {"type": "integer", "minimum": 0, "maximum": 999_999_999_999},
                    "Only these API keys of your organization (other ids match nothing)."),
        _list_param("models", {"type": "string", "minLength": 1, "maxLength": 100}, "Only these models."),
        _int_param("limit", "Buckets per page: default 7 (1d), 24 (1h), 60 (1m); at most 31, 168, 1440.",
                   lo=1, hi=max(q.BUCKET_LIMIT_MAX.values())),
        OpenApiParameter("page", {"type": "string", "minLength": 1, "maxLength": 200}, OpenApiParameter.QUERY,
                         description="The previous page's `next_page`, with the same other parameters."),
        *openapi._headers(_STATUSES, images=False),
    ]


_BUCKET_SHAPE = ('`{"object": "page", "data": [{"object": "bucket", "start_time", "end_time", "results": [...]}], '
                 '"has_more", "next_page"}`.')


# --- Views ----------------------------------------------------------------------------------------------------------

class UsageImagesView(V1APIView):
    """GET /v1/organization/usage/images"""

    permission_classes = [IsAuthenticated, ReadsUsage]

    @extend_schema(
        operation_id="usageImages", tags=["Usage"], summary="Images usage",
        description="Images made and requests made per time bucket, from the ledger. Each page is " + _BUCKET_SHAPE
                    + ' A result: `{"object": "organization.usage.images.result", "images", "num_model_requests", '
                    '"model", "api_key_id", "api_key_name", "provider", "size"}` (a field is null unless grouped '
                    'by). `images` counts succeeded requests only; `num_model_requests` every request.',
        parameters=_bucket_parameters(q.IMAGES_GROUP_BY),
        responses=_responses("A page of buckets of images usage."),
    )
    def get(self, request):
        query = _bucket_query(request, q.IMAGES_GROUP_BY)
        return Response(_run(q.usage_images_page, **query).as_json())


class CostsView(V1APIView):
    """GET /v1/organization/costs"""

    permission_classes = [IsAuthenticated, ReadsUsage]

    @extend_schema(
        operation_id="usageCosts", tags=["Usage"], summary="Costs",
        description="Money charged per time bucket, from the ledger. Each page is " + _BUCKET_SHAPE
                    + ' A result: `{"object": "organization.costs.result", "amount": {"value", "value_micros", '
                    '"currency": "usd"}, "line_item", "model", "api_key_id", "api_key_name", "provider", "size"}`. '
                    '`value` is USD with 6 decimals; `value_micros` is the exact integer micro-USD of the ledger.',
        parameters=_bucket_parameters(q.COSTS_GROUP_BY),
        responses=_responses("A page of buckets of costs."),
    )
    def get(self, request):
        query = _bucket_query(request, q.COSTS_GROUP_BY)
        return Response(_run(q.costs_page, **query).as_json())


class UsageRecordsView(V1APIView):
    """GET /v1/organization/usage/records"""

    permission_classes = [IsAuthenticated, ReadsUsage]

    @extend_schema(
        operation_id="listUsageRecords", tags=["Usage"], summary="Usage records",
        description='One record per request (the ledger rows), newest first: `{"object": "list", "data": [...], '
                    '"has_more", "next_cursor"}`; pass `next_cursor` back as `cursor` for the next page. A record: '
                    '`{"object": "organization.usage.record", "id" (the request id), "created", "model", '
                    '"provider", "size", "quality", "n", "status", "error_code", "cost": {"value", "value_micros", '
                    '"currency"}, "latency_ms", "api_key": {"id", "name", "prefix"}}`.',
        parameters=[
            _int_param("start_time", "Only requests at or after this unix time.", lo=0, hi=MAX_TIME),
            _int_param("end_time", "Only requests before this unix time.", lo=1, hi=MAX_TIME),
            OpenApiParameter("model", {"type": "string", "minLength": 1, "maxLength": 100}, OpenApiParameter.QUERY,
                             description="Only this model."),
            OpenApiParameter("provider", {"type": "string", "minLength": 1, "maxLength": 50},
                             OpenApiParameter.QUERY, description="Only this provider."),
            OpenApiParameter("status", {"type": "string", "enum": STATUSES}, OpenApiParameter.QUERY,
                             description="Only requests with this outcome."),
            _int_param("api_key_id", "Only this API key of your organization (another id matches nothing).",
                       lo=0, hi=999_999_999_999),
            _int_param("limit", "Records per page, 1-1000 (default 100).", lo=1, hi=q.RECORDS_LIMIT_MAX),
            OpenApiParameter("cursor", {"type": "string", "minLength": 1, "maxLength": 200}, OpenApiParameter.QUERY,
                             description="The previous page's `next_cursor`, with the same filters."),
            *openapi._headers(_STATUSES, images=False),
        ],
        responses=_responses("A page of usage records."),
    )
    def get(self, request):
        params = _Params(request, single={"start_time", "end_time", "model", "provider", "status", "api_key_id",
                                          "limit", "cursor"})
        start = params.integer("start_time", lo=0, hi=MAX_TIME, what=" (unix seconds)")
        end = params.integer("end_time", lo=1, hi=MAX_TIME, what=" (unix seconds)")
        if start is not None and end is not None and end <= start:
            raise InvalidRequest(f"'end_time' ({end}) must be after 'start_time' ({start}).", param="end_time")
        status = params.string("status")
        if status is not None and status not in STATUSES:
            raise InvalidRequest(f"Invalid 'status': {status!r}. status must be one of {', '.join(STATUSES)}.",
                                 param="status")
        api_key_id = params.string("api_key_id")
        if api_key_id is not None and not _INT.match(api_key_id):
            raise InvalidRequest(f"'api_key_id' must be an API key id (an integer, as `api_key.id` in records); "
                                 f"got {api_key_id!r}.", param="api_key_id")
        page = _run(q.records_page, organization=request.user.organization,
                    limit=params.integer("limit", lo=1, hi=q.RECORDS_LIMIT_MAX, default=q.RECORDS_LIMIT_DEFAULT),
                    cursor=params.string("cursor"), start_time=start, end_time=end, model=params.string("model"),
                    provider=params.string("provider"), status=status,
                    api_key_id=int(api_key_id) if api_key_id is not None else None)
        return Response(page)
