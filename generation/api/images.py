"""POST /v1/images/generations, /v1/images/edits and /v1/images/variations: read and check the body, honour an
Idempotency-Key, hand the request to the pipeline (generation/pipeline/service.py), answer in OpenAI's shapes: JSON,
or Server-Sent Events for `stream: true` (generation/api/streaming.py)."""
import asyncio
from dataclasses import dataclass

from django.http import HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from rest_framework.parsers import FormParser, MultiPartParser

from accounts import keys
from accounts.selectors import key_allows_model
from config import db
from config.observability.middleware import observe
from generation import catalog
from generation.api import jobs as job_api
from generation.api import streaming
from generation.api.base import V1APIView, authenticate, base_url, require_scope
from generation.api.parsers import StrictJSONParser, parse_json
from generation.errors import APIError, InvalidRequest, PermissionDenied, ServerError, error_response
from generation.pipeline import idempotency, input_images, ratelimit, service


class ImageEndpoint(V1APIView):
    """POST /v1/images/{generations,edits,variations}: served without DRF's request cycle.

    `as_view` returns a plain async Django view that calls `serve`: authentication from the per-process key cache,
    the rate limit in one Redis script, the body parsed here, the generation service, OpenAI's error envelope. DRF's
    dispatch (Request wrapping, content negotiation, renderers) cost ~200 µs of CPU per request, a fifth of the
    whole lean path (docs/decisions.md); the class stays a DRF view so drf-spectacular still describes it
    (generation/api/openapi.py), and `post` is the same code for any DRF tooling that calls it."""

    endpoint = ""
    parser_classes = [StrictJSONParser]
    multipart = False

    @classmethod
    def as_view(cls, **initkwargs):
        async def view(request, *args, **kwargs):
            return await cls(**initkwargs).serve(request)

        view.cls, view.initkwargs, view.csrf_exempt = cls, initkwargs, True
        view.__doc__ = cls.__doc__
        return view

    async def post(self, request):
        return await self.serve(request)

    async def serve(self, request) -> HttpResponse:
        try:
            request.get_host()  # DisallowedHost → 400 before anything else (image URLs are built from it)
            principal = await authenticate(request)
            observe(request, organization_id=principal.organization.pk, key_prefix=principal.api_key.prefix)
            require_scope(principal.api_key, keys.SCOPE_GENERATE)
            await ratelimit.enforce(request, principal.api_key, principal.organization)
            if request.method != "POST":
                raise APIError(f'Method "{request.method}" not allowed.', status=405, code="method_not_allowed")
            async with input_images.KeptPixels():  # decoded input images kept for the request, given back at its end
                data, files = await self._read(request)
                if job_api.prefers_async(self, request):  # `Prefer: respond-async`: 202 and a job (api/jobs.py)
                    return await job_api.create(self, request, principal, data, files)
                if streaming.requested(data):  # the same request, answered as Server-Sent Events
                    return await streaming.respond(self._answer(request, principal, data, files), request=request,
                                                   endpoint=self.endpoint, data=data)
                return await self._generate(request, principal, data, files)
        except Exception as exc:  # every failure leaves in OpenAI's envelope
            return error_response(exc, request)

    async def _read(self, request) -> tuple[dict, dict]:
        return await read_json(request)

    async def _generate(self, request, principal, data, files: dict) -> HttpResponse:
        stored, headers = await self._answer(request, principal, data, files)
        return JsonResponse(stored.body, status=stored.status, headers=headers)

    async def _answer(self, request, principal, data, files: dict) -> tuple[idempotency.StoredResponse, dict]:
        """The request's answer (status, body) and its response headers: the pipeline's, or the one stored under
        its Idempotency-Key."""
        request_id = request.request_id
        durable: tuple[str, str] | None = None  # (Idempotency-Key, fingerprint) once known
        earlier = {"replayed": False}

        async def compute() -> idempotency.StoredResponse:
            try:
                outcome = await service.run(
                    endpoint=self.endpoint, organization=principal.organization, api_key=principal.api_key,
                    request_id=request_id, data=data, files=files, form=bool(files) or self.multipart,
                    base_url=base_url(request), idempotency_key=durable,
                )
                earlier["replayed"] = outcome.request_id is not None  # an earlier attempt's committed answer
                observe(request, provider=outcome.provider, cost_micros=outcome.cost_micros)
                headers = {**outcome.headers, "x-provider": outcome.provider,
                           "x-request-id": outcome.request_id or request_id}
                return idempotency.StoredResponse(200, outcome.body, headers)
            except APIError as exc:  # 4xx are stored and replayed under an Idempotency-Key; 5xx are not
                return idempotency.StoredResponse(exc.status, exc.body(), {**exc.headers, "x-request-id": request_id})

        # The key's model allow-list holds for replays too (a replay runs no validation): checked before anything.
        model_id = data.get("model") if isinstance(data, dict) else None
        known = catalog.get_model(model_id if isinstance(model_id, str) else catalog.DEFAULT_MODEL)
        observe(request, model=known.id if known is not None else "other")  # never a client's string: no new series
        if isinstance(model_id, str) and not key_allows_model(principal.api_key, model_id):
            raise PermissionDenied(f"This API key may not use model '{model_id[:100]}'. It may use: "
                                   f"{', '.join(principal.api_key.allowed_models)}.", param="model",
                                   code="model_not_allowed")

        # Shielded: a client that disconnects mid-generation does not cancel the work, so an image that was made is
        # recorded once and its response stored for the retry, instead of being half-done.
        raw_key = request.headers.get(idempotency.HEADER)
        if raw_key is None:
            stored, replayed = await asyncio.shield(compute()), False
        else:
            try:
                key = idempotency.validate_key(raw_key)
            except ValueError as exc:
                raise InvalidRequest(str(exc), param=None, code="invalid_idempotency_key") from exc
            fp = await asyncio.to_thread(idempotency.fingerprint, method=request.method, path=request.path,
                                         body=self._fingerprint_body(data, files))
            durable = (key, fp)
            org_id = principal.organization.pk

            async def recover():  # an earlier attempt that died after committing: its answer, from the database
                return await db.run(idempotency.load_durable, organization_id=org_id, key=key)

            try:
                stored, replayed = await asyncio.shield(idempotency.run_once(
                    scope=str(org_id), key=key, fingerprint=fp, compute=compute, recover=recover))
            except idempotency.IdempotencyConflict as exc:
                raise APIError(exc.message, status=409, code=exc.code) from exc
            except idempotency.IdempotencyInProgress as exc:
                raise APIError(exc.message, status=409, code=exc.code, headers={"retry-after": "1"}) from exc
            except idempotency.IdempotencyUnavailable as exc:
                raise ServerError(exc.message, status=503, code=exc.code, headers={"retry-after": "1"}) from exc
        headers = dict(stored.headers)
        # A replay answers with the first request's id (the middleware writes request.request_id on the way out).
        request.request_id = headers.pop("x-request-id", request_id)
        if replayed or earlier["replayed"]:
            headers[idempotency.REPLAYED_HEADER] = "true"
        return stored, headers

    def _fingerprint_body(self, data, files):
        return data


class ImageGenerationsView(ImageEndpoint):
    """POST /v1/images/generations (JSON)."""

    endpoint = "generations"


class _MultipartImageEndpoint(ImageEndpoint):
    parser_classes = [MultiPartParser, FormParser]
    multipart = True

    async def _read(self, request) -> tuple[dict, dict]:
        body = await read_form(request)
        self._post, self._uploads, self._raw_uploads = body.post, body.files, body.raw  # raw: an async job keeps them
        return body.fields, body.inspected

    def _fingerprint_body(self, data, files):
        from django.utils.datastructures import MultiValueDict

        merged = MultiValueDict()
        merged.update(self._post)
        merged.update(self._uploads)
        return merged


class ImageEditsView(_MultipartImageEndpoint):
    """POST /v1/images/edits (multipart): `image` or repeated `image[]`, optional `mask`, `prompt`, ..."""

    endpoint = "edits"


class ImageVariationsView(_MultipartImageEndpoint):
    """POST /v1/images/variations (multipart): one `image`."""

    endpoint = "variations"


async def read_json(request) -> tuple[dict, dict]:
    """A JSON endpoint's body (strict: parsers.py) and no files. 415 for another content type; an empty body is {}
    (validation names the missing prompt)."""
    content_type = request.content_type or ""
    if not request.body:
        return {}, {}
    if content_type != "application/json":
        raise APIError(f'Unsupported media type "{content_type}" in request. Send JSON with Content-Type: '
                       "application/json.", status=415, code="unsupported_media_type")
    return parse_json(request.body), {}  # ParseError → 400 invalid_json (errors.py)


@dataclass(frozen=True)
class FormBody:
    """A multipart request as read: its fields, each upload checked and decoded once ({field: [InputImage]}),
    Django's POST and FILES (for the Idempotency-Key fingerprint), and the uploads as sent ([(field, bytes,
    filename)]: an async job keeps them for its worker, generation/api/jobs.py)."""

    fields: dict
    inspected: dict
    post: dict
    files: dict
    raw: list


async def read_form(request) -> FormBody:
    """A multipart endpoint's body. Every uploaded file is checked and decoded once
    (generation/pipeline/input_images.py inspect_uploads), off the event loop and within the process's decode
    budget. 415 for another content type; 400 invalid_request_body for a form Django cannot parse."""
    content_type = request.content_type or ""
    if not content_type and request.META.get("CONTENT_LENGTH") in (None, "", "0"):
        return FormBody({}, {}, {}, {}, [])  # validation names what is missing
    if content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise APIError(f'Unsupported media type "{content_type}" in request. Send multipart/form-data.',
                       status=415, code="unsupported_media_type")

    def parse():
        try:
            return request.POST, request.FILES
        except MultiPartParserError as exc:
            raise APIError(f"We could not parse the body of your request: {exc}",
                           code="invalid_request_body") from exc

    post, files = await asyncio.to_thread(parse)
    fields = {key: post.get(key) for key in post.keys()}
    spec = catalog.get_model(fields.get("model") or catalog.DEFAULT_MODEL)
    raw = [(field, upload.read(), upload.name or field) for field in files.keys() for upload in files.getlist(field)]
    inspected = await input_images.inspect_uploads(raw, spec=spec, size=fields.get("size"))
    return FormBody(fields, inspected, post, files, raw)
