"""Async image jobs: `Prefer: respond-async` (RFC 7240) on /v1/images/generations and /v1/images/edits.

A job is the same request the synchronous path serves, run later by a Celery worker through the same pipeline
(service.run: validation, moderation, input images, spend holds, routing, storage, the one commit), so every limit
the synchronous path honours holds for it too. What happens when:

- `create` (the API, on a database thread): the request is written as an ImageJob row (and an edit's uploads as
  ImageJobInput rows), status `queued`; with an Idempotency-Key the same key names the same job (unique per
  organization), and another body under that key is refused (409 idempotency_key_reused).
- `run` (the Celery task generation.tasks.run_image_job, acks late, requeued when its worker is lost): claims the
  job with a lease (LEASE_SECONDS, renewed while it runs) so one worker runs it at a time; a job whose worker died
  is claimed again once the lease has run out. The job's `request_id` anchors the charge: the answer is committed
  with the ledger row as an IdempotentResponse under `anchor(job)`, so a second run after a crash finds the first
  run's answer (and charges nothing), or, if the first run died before its commit, runs the request again.
- `cancel`: a queued job is cancelled at once (it never runs); a running or finished job is not (409
  job_not_cancellable): its upstream call may already be paid for.
- Results are kept as long as their image URLs live (settings.IMAGE_URL_TTL_SECONDS from the job's end); the beat
  task generation.tasks.expire_image_jobs deletes older jobs, and reading one past its expiry is a 404.
"""
import asyncio
import base64
import logging
import os
import secrets
import threading
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import ApiKey, Organization
from billing.models import LedgerEntry
from config import db
from generation import catalog
from generation.errors import APIError, InvalidRequest, ServerError
from generation.models import ImageJob, ImageJobInput
from generation.pipeline import idempotency, input_images, service, webhooks

log = logging.getLogger(__name__)

ASYNC_ENDPOINTS = ("generations", "edits")
PREFERENCE = "respond-async"
LEASE_SECONDS = settings.IMAGE_JOB_LEASE_SECONDS  # a running job's claim; renewed every quarter of it
LIST_DEFAULT, LIST_MAX = 20, 100
OBJECT = "image.job"


class JobNotFound(Exception):
    pass


class NotCancellable(Exception):
    def __init__(self, job: ImageJob):
        super().__init__(job.status)
        self.job = job


class LeaseHeld(Exception):
    """Another worker holds the job's lease; retry after `seconds`."""

    def __init__(self, seconds: float):
        super().__init__(seconds)
        self.seconds = seconds


def prefers_async(prefer_headers: list[str]) -> bool:
    """Whether the Prefer header(s) ask for `respond-async` (RFC 7240 §2: comma-separated preferences, each
    `token [= value] *(; parameter)`, tokens compared case-insensitively)."""
    for header in prefer_headers:
        for preference in header.split(","):
            token = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
            if token == PREFERENCE:
                return True
    return False


def new_id() -> str:
    return "imgjob_" + base64.b32encode(secrets.token_bytes(15)).decode("ascii").lower()


def anchor(job: ImageJob) -> str:
    """The key the job's charged answer is committed under (IdempotentResponse). A newline can never be in a
    client's Idempotency-Key (printable ASCII only), so no client key can name it."""
    return f"job\n{job.request_id}"


def parameters(data: dict) -> dict:
    """What the job shows of its request: every field but the prompt."""
    return {k: v for k, v in data.items() if k != "prompt"}


# --- creating, reading, listing, cancelling (sync: run them on a database thread) -------------------------------------

def create(*, organization: Organization, api_key: ApiKey | None, endpoint: str, data: dict, form: bool,
           uploads: list[tuple[str, str, bytes]], model: str, base_url: str,
           idempotency_key: tuple[str, str] | None = None) -> tuple[ImageJob, bool]:
    """Write a queued job (and an edit's uploads: (field, filename, bytes) in order). Returns (job, existing): with
    an Idempotency-Key already used for this organization, the job it created and True.
    Raises idempotency.IdempotencyConflict when that key was used with another request."""
    key_hash, fp = "", None
    if idempotency_key is not None:
        key_hash, fp = idempotency.key_hash(idempotency_key[0]), idempotency_key[1]
        earlier = _by_key(organization, key_hash, fp, idempotency_key[0])
        if earlier is not None:
            return earlier, True
    job = ImageJob(id=new_id(), organization=organization, api_key=api_key, endpoint=endpoint,
                   request_id="req_" + secrets.token_hex(16), model=model, parameters=parameters(data),
                   request=data, form=form, base_url=base_url, idempotency_key_hash=key_hash, fingerprint=fp or "")
    try:
        with transaction.atomic():
            job.save(force_insert=True)
            ImageJobInput.objects.for_organization(organization).bulk_create([
                ImageJobInput(organization=organization, job=job, field=field, position=i, filename=filename,
                              data=content) for i, (field, filename, content) in enumerate(uploads)])
    except IntegrityError:
        if not key_hash:
            raise
        earlier = _by_key(organization, key_hash, fp, idempotency_key[0])  # a concurrent request with the key won
        if earlier is None:
            raise
        return earlier, True
    return job, False


def _by_key(organization, key_hash: str, fp: str, key: str) -> ImageJob | None:
    earlier = ImageJob.objects.for_organization(organization).filter(idempotency_key_hash=key_hash).first()
    if earlier is not None and earlier.fingerprint != fp:
        raise idempotency.IdempotencyConflict(key)
    return earlier


def _live(organization) -> "ImageJob.objects":
    return ImageJob.objects.for_organization(organization).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))


def get(organization, job_id: str) -> ImageJob:
    """The organization's job (JobNotFound for another organization's, an unknown or an expired one)."""
    job = _live(organization).filter(pk=job_id).first()
    if job is None:
        raise JobNotFound(job_id)
    return job


def page(organization, *, after: str | None, limit: int) -> tuple[list[ImageJob], bool]:
    """Newest first, `limit` jobs after the job `after` (JobNotFound if it is not the organization's); has_more."""
    jobs = _live(organization).order_by("-created_at", "-id")
    if after:
        cursor = ImageJob.objects.for_organization(organization).filter(pk=after).values_list("created_at", "id")
        position = cursor.first()
        if position is None:
            raise JobNotFound(after)
        jobs = jobs.filter(Q(created_at__lt=position[0]) | Q(created_at=position[0], id__lt=position[1]))
    rows = list(jobs[:limit + 1])
    return rows[:limit], len(rows) > limit


def cancel(organization, job_id: str) -> ImageJob:
    """Cancel a queued job (NotCancellable when it is already running or finished); its event is written with it."""
    now = timezone.now()
    with transaction.atomic():
        changed = _live(organization).filter(pk=job_id, status=ImageJob.Status.QUEUED).update(
            status=ImageJob.Status.CANCELLED, finished_at=now, request={},
            expires_at=now + timedelta(seconds=settings.IMAGE_URL_TTL_SECONDS))
        job = get(organization, job_id)
        if changed:
            ImageJobInput.objects.for_organization(organization).filter(job=job).delete()
            _emit(job)
            return job
    raise NotCancellable(job)


def as_object(job: ImageJob) -> dict:
    """The job as the API shows it: id, object "image.job", status, created (Unix seconds), model, endpoint,
    request_id, parameters (the request without its prompt), started_at / finished_at / expires_at (Unix seconds or
    null); on success `data` and `usage` as the synchronous answer has them, on failure `error` (OpenAI's error
    object: message, type, param, code)."""
    def unix(when):
        return int(when.timestamp()) if when is not None else None

    body = {"id": job.id, "object": OBJECT, "status": job.status, "created": unix(job.created_at), "model": job.model,
            "endpoint": job.endpoint, "request_id": job.request_id, "parameters": job.parameters,
            "started_at": unix(job.started_at), "finished_at": unix(job.finished_at),
            "expires_at": unix(job.expires_at)}
    if job.status == ImageJob.Status.SUCCEEDED and job.result:
        body.update(job.result)  # created, data, usage (and gpt-image's echoed fields) as the synchronous answer
        body["created"] = unix(job.created_at)
    if job.status == ImageJob.Status.FAILED:
        body["error"] = job.error
    return body


def delete_expired(*, batch: int = 500) -> int:
    """Delete jobs whose results outlived their image URLs (a beat task); returns how many."""
    ids = list(ImageJob.all_tenants_unsafe.filter(expires_at__lte=timezone.now()).values_list("pk", flat=True)[:batch])
    deleted, _ = ImageJob.all_tenants_unsafe.filter(pk__in=ids).delete()
    return len(ids) if deleted else 0


# --- running (the Celery task) ---------------------------------------------------------------------------------------

def _claim(job_id: str, token: str) -> ImageJob | None:
    """Take the job's lease: a queued job, or a running one whose worker stopped renewing. None when the job is
    finished or gone; LeaseHeld when a live worker runs it."""
    now = timezone.now()
    with transaction.atomic():
        job = ImageJob.all_tenants_unsafe.select_for_update().filter(pk=job_id).first()
        if job is None or job.status in ImageJob.FINISHED:
            return None
        if job.status == ImageJob.Status.RUNNING and job.lease_until and job.lease_until > now:
            raise LeaseHeld((job.lease_until - now).total_seconds())
        job.status, job.lease_token = ImageJob.Status.RUNNING, token
        job.lease_until = now + timedelta(seconds=LEASE_SECONDS)
        job.started_at = job.started_at or now
        job.attempts += 1
        job.save(update_fields=["status", "lease_token", "lease_until", "started_at", "attempts"])
    return job


def _renew(job_id: str, token: str) -> bool:
    return bool(ImageJob.all_tenants_unsafe.filter(pk=job_id, lease_token=token, status=ImageJob.Status.RUNNING)
                .update(lease_until=timezone.now() + timedelta(seconds=LEASE_SECONDS)))


def _finish(job: ImageJob, *, result: dict | None = None, error: dict | None = None) -> None:
    """End a running job: its answer or error, its expiry, its inputs dropped and its event (webhooks.py) written,
    all in one transaction, only if it was still running (so one ending, one event)."""
    now = timezone.now()
    status = ImageJob.Status.SUCCEEDED if error is None else ImageJob.Status.FAILED
    with transaction.atomic():
        updated = ImageJob.all_tenants_unsafe.filter(pk=job.pk, status=ImageJob.Status.RUNNING).update(
            status=status, result=result, error=error, finished_at=now, request={}, lease_until=None,
            expires_at=now + timedelta(seconds=settings.IMAGE_URL_TTL_SECONDS))
        if updated:
            ImageJobInput.all_tenants_unsafe.filter(job_id=job.pk).delete()
            _emit(ImageJob.all_tenants_unsafe.get(pk=job.pk))


def _emit(job: ImageJob) -> list[int]:
    return webhooks.emit(organization_id=job.organization_id, job_id=job.pk, event_type=f"image.job.{job.status}",
                         job_object=as_object(job))


def _earlier_outcome(job: ImageJob) -> tuple[dict | None, dict | None] | None:
    """What an earlier run of the job left in the ledger: (answer, None) when it was charged, (None, error) when it
    failed and was recorded, None when nothing was committed (run it)."""
    stored = idempotency.load_durable(organization_id=job.organization_id, key=anchor(job))
    if stored is not None:
        return stored.body, None
    entry = LedgerEntry.objects.for_organization(job.organization_id).filter(request_id=job.request_id).first()
    if entry is None:
        return None
    code = entry.error_code or "server_error"
    return None, {"message": f"The job's request failed ({code}).", "type": "invalid_request_error"
                  if entry.status in (LedgerEntry.Status.INVALID, LedgerEntry.Status.REFUSED) else "server_error",
                  "param": None, "code": code}


_loop_state = threading.local()


def _loop() -> asyncio.AbstractEventLoop:
    """This worker process's event loop, kept across tasks: the async database pool, the Redis clients and the
    committer are per loop, and a loop per task would open them again for every job."""
    loop = getattr(_loop_state, "loop", None)
    if loop is None or loop.is_closed() or getattr(_loop_state, "pid", None) != os.getpid():
        loop = _loop_state.loop = asyncio.new_event_loop()
        _loop_state.pid = os.getpid()
    return loop


def close_loop() -> None:
    """Close this process's job loop (a worker process shutting down), after the upstream sessions and the async
    database pool bound to it."""
    loop = getattr(_loop_state, "loop", None)
    if loop is None or loop.is_closed():
        return

    async def close():
        from generation.providers import registry

        for provider in registry().values():
            aclose = getattr(provider, "aclose", None)
            if aclose is not None:
                await aclose()
        await db.close_async_pools()

    loop.run_until_complete(close())
    loop.close()


def run(job_id: str) -> str | None:
    """Run the job once (the Celery task's body); returns its final status, or None when there was nothing to do.
    Raises LeaseHeld when another worker is running it."""
    token = secrets.token_hex(16)
    job = _claim(job_id, token)
    if job is None:
        return None
    earlier = _earlier_outcome(job)
    if earlier is not None:
        _finish(job, result=earlier[0], error=earlier[1])
        return ImageJob.Status.SUCCEEDED if earlier[1] is None else ImageJob.Status.FAILED
    try:
        body = _loop().run_until_complete(_run_leased(job, token))
    except APIError as exc:
        _finish(job, error=exc.body()["error"])
        return ImageJob.Status.FAILED
    except Exception:
        log.exception("Image job %s failed", job.pk)
        _finish(job, error=ServerError("The job failed because of an error on our side. Create it again.").body()
                ["error"])
        return ImageJob.Status.FAILED
    _finish(job, result=body)
    return ImageJob.Status.SUCCEEDED


async def _run_leased(job: ImageJob, token: str) -> dict:
    async def renew():
        while True:
            await asyncio.sleep(LEASE_SECONDS / 4)
            await db.run(_renew, job.pk, token)

    renewer = asyncio.ensure_future(renew())
    try:
        return await execute(job)
    finally:
        renewer.cancel()


async def execute(job: ImageJob) -> dict:
    """Serve the job's request through the pipeline (service.run) as the synchronous path would have, with the
    job's request id and its answer committed under `anchor(job)`. Returns the answer's body; raises APIError."""
    organization, api_key = await db.run(_principal, job)
    async with input_images.KeptPixels():
        files = await _files(job)
        fp = job.fingerprint or "job"
        outcome = await service.run(endpoint=job.endpoint, organization=organization, api_key=api_key,
                                    request_id=job.request_id, data=job.request, files=files, form=job.form,
                                    base_url=job.base_url, idempotency_key=(anchor(job), fp))
    return outcome.body


def _principal(job: ImageJob) -> tuple[Organization, ApiKey | None]:
    """The job's organization and key as they are now: a key revoked or expired since the job was queued may no
    longer spend (401 invalid_api_key, as the synchronous path answers it)."""
    organization = Organization.objects.get(pk=job.organization_id)
    api_key = None
    if job.api_key_id is not None:
        api_key = ApiKey.objects.for_organization(organization).select_related("organization").filter(
            pk=job.api_key_id).first()
    if api_key is None or not api_key.is_active:
        raise APIError("The API key that created this job has been revoked or has expired.", status=401,
                       code="invalid_api_key")
    return organization, api_key


async def _files(job: ImageJob) -> dict:
    """An edit's uploads checked and decoded again, as the API checked them when the job was created."""
    if job.endpoint != "edits":
        return {}
    uploads = await db.run(lambda: list(ImageJobInput.objects.for_organization(job.organization_id)
                                        .filter(job_id=job.pk).values_list("field", "filename", "data")))
    spec = catalog.get_model(job.request.get("model") or catalog.DEFAULT_MODEL)
    if spec is None:
        raise InvalidRequest(f"The model '{job.model}' does not exist.", param="model", code="model_not_found")
    return await input_images.inspect_uploads(
        [(field, bytes(data), filename) for field, filename, data in uploads], spec=spec,
        size=job.request.get("size"))

