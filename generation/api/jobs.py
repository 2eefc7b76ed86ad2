"""Async image jobs on the /v1 surface (generation/pipeline/jobs.py runs them):

    POST /v1/images/generations, /v1/images/edits with `Prefer: respond-async`   202, the job, Location
    GET  /v1/images/jobs/{id}                                                    the job
    GET  /v1/images/jobs?after=&limit=                                           a page of jobs, newest first
    POST /v1/images/jobs/{id}/cancel                                             cancel a queued job

All need the `images.generate` scope; another organization's job is a 404, as an unknown one is.
"""
import asyncio

from django.db import connections
from django.http import HttpResponse, JsonResponse
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response

from accounts import keys
from config import db
from generation.api.base import V1APIView, base_url, require_scope
from generation.errors import APIError, InvalidRequest, NotFound, ServerError
from generation.pipeline import idempotency, service
from generation.pipeline import jobs as job_service
from generation.pipeline.validation import validate
from generation.providers import registry


def prefers_async(view, request) -> bool:
    """The request is one that may run as a job and asks for it (`Prefer: respond-async`)."""
    return view.endpoint in job_service.ASYNC_ENDPOINTS and job_service.prefers_async(
        [request.headers.get("Prefer", "")])


async def create(view, request, principal, data, files) -> HttpResponse:
    """202 Accepted with the job object, `Location: /v1/images/jobs/{id}` and `Preference-Applied: respond-async`.

    A request the synchronous path would refuse before any work (the key's allowed models, validation) is answered
    as the synchronous path answers it (its 4xx, recorded in the ledger), and no job is created. With an
    Idempotency-Key, a retry gets the same job (`idempotent-replayed: true`); another body under the same key is
    409 idempotency_key_reused."""
    registry()  # built on first use; it also registers configured self-hosted models in the catalog
    try:
        call = validate(view.endpoint, data, files=files, form=bool(files) or view.multipart,
                        is_available=service.is_available, api_key=principal.api_key)
    except APIError:
        return await view._generate(request, principal, data, files)
    durable = None
    raw_key = request.headers.get(idempotency.HEADER)
    if raw_key is not None:
        try:
            key = idempotency.validate_key(raw_key)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param=None, code="invalid_idempotency_key") from exc
        fp = await asyncio.to_thread(idempotency.fingerprint, method=request.method, path=request.path,
                                     body=view._fingerprint_body(data, files))
        durable = (key, fp)
    uploads = [(field, filename, content) for field, content, filename in getattr(view, "_raw_uploads", [])]
    try:
        job, existing = await db.run(
            job_service.create, organization=principal.organization, api_key=principal.api_key,
            endpoint=view.endpoint, data=data, form=view.multipart, uploads=uploads, model=call.request.model,
            base_url=base_url(request), idempotency_key=durable)
    except idempotency.IdempotencyConflict as exc:
        raise APIError(exc.message, status=409, code=exc.code) from exc
    if not existing:
        try:
            await asyncio.to_thread(_enqueue, job.pk)
        except Exception as exc:
            await db.run(job_service.cancel, principal.organization, job.pk)
            raise ServerError("Jobs cannot be queued right now; retry, or send the request without "
                              "`Prefer: respond-async`.", status=503, code="job_queue_unavailable",
                              headers={"retry-after": "5"}) from exc
        job = await db.run(job_service.get, principal.organization, job.pk)
    headers = {"Location": f"/v1/images/jobs/{job.pk}", "Preference-Applied": job_service.PREFERENCE}
    if existing:
        headers[idempotency.REPLAYED_HEADER] = "true"
    request.request_id = job.request_id  # the id the job's ledger row carries
    return JsonResponse(job_service.as_object(job), status=202, headers=headers)


def _enqueue(job_id: str) -> None:
    """Hand the job to the workers (in-process when Celery runs eagerly: the embedded default, no broker)."""
    from generation.tasks import run_image_job

    try:
        run_image_job.delay(job_id)
    finally:
        connections.close_all()


class GeneratesImages(BasePermission):
    """The key must have the `images.generate` scope (401 missing_scope otherwise, as OpenAI answers)."""

    def has_permission(self, request, view) -> bool:
        api_key = getattr(request.user, "api_key", None)
        if api_key is not None:
            require_scope(api_key, keys.SCOPE_GENERATE)
        return True


def _not_found(job_id: str) -> NotFound:
    """404 for an unknown, expired or another organization's job (the id is not echoed: nothing is confirmed)."""
    return NotFound("No image job of your organization has this id (jobs are kept until their image URLs "
                    "expire).", param="id", code="not_found")


class ImageJobListView(V1APIView):
    """GET /v1/images/jobs: the organization's jobs, newest first, paged as OpenAI pages its lists."""

    permission_classes = [IsAuthenticated, GeneratesImages]

    def get(self, request):
        allowed = {"after", "limit"}
        for name in request.query_params.keys():
            if name not in allowed:
                raise InvalidRequest(f"Unknown parameter: '{name}'. This endpoint takes: after, limit.", param=name,
                                     code="unknown_parameter")
        raw_limit = request.query_params.get("limit")
        limit = job_service.LIST_DEFAULT
        if raw_limit not in (None, ""):
            if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= job_service.LIST_MAX:
                raise InvalidRequest(f"'limit' must be an integer from 1 to {job_service.LIST_MAX}; got "
                                     f"{raw_limit[:20]!r}.", param="limit")
            limit = int(raw_limit)
        after = request.query_params.get("after") or None
        if after is not None and (len(after) > 40 or not after.isascii()):
            raise _not_found(after)
        try:
            rows, has_more = job_service.page(request.user.organization, after=after, limit=limit)
        except job_service.JobNotFound as exc:
            raise InvalidRequest("'after' names no job of your organization (use a `last_id` of this list).",
                                 param="after") from exc
        data = [job_service.as_object(job) for job in rows]
        return Response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                         "last_id": data[-1]["id"] if data else None, "has_more": has_more})


class ImageJobDetailView(V1APIView):
    """GET /v1/images/jobs/{id}"""

    permission_classes = [IsAuthenticated, GeneratesImages]

    def get(self, request, job_id: str):
        try:
            return Response(job_service.as_object(job_service.get(request.user.organization, job_id)))
        except job_service.JobNotFound as exc:
            raise _not_found(job_id) from exc


class ImageJobCancelView(V1APIView):
    """POST /v1/images/jobs/{id}/cancel"""

    permission_classes = [IsAuthenticated, GeneratesImages]

    def post(self, request, job_id: str):
        from generation.tasks import send_webhooks

        try:
            job = job_service.cancel(request.user.organization, job_id)
        except job_service.JobNotFound as exc:
            raise _not_found(job_id) from exc
        except job_service.NotCancellable as exc:
            raise APIError(f"The job is {exc.job.status} and can no longer be cancelled: only a queued job can.",
                           param="id", code="job_not_cancellable") from exc
        send_webhooks(job.pk)  # image.job.cancelled
        return Response(job_service.as_object(job))
