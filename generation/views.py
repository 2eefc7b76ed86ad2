"""The /v1 API views: thin, async where they wait on upstreams. Work happens in services; errors in errors.py."""
import asyncio

from adrf.views import APIView
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from config import db

from . import catalog, idempotency, images, services, storage
from .parsers import StrictJSONParser
from .errors import APIError, InvalidRequest, ModelNotFound, ServerError, envelope, handler404
from .providers import registry


def _base_url(request) -> str:
    return settings.PUBLIC_BASE_URL or request.build_absolute_uri("/")


class V1APIView(APIView):
    """Base of every /v1 endpoint: API-key authentication, OpenAI's error envelope (settings.REST_FRAMEWORK).

    Async endpoints run DRF's `initial()` (authentication, rate limits) on the database threads of db.py rather
    than on a thread of the request's own, so no connection is held while the request waits on an upstream."""

    metadata_class = None  # no DRF metadata on OPTIONS: the API's surface is what the OpenAPI schema says

    async def async_dispatch(self, request, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        try:
            await db.run(self.initial, request, *args, **kwargs)
            handler = getattr(self, request.method.lower(), None) if request.method.lower() in \
                self.http_method_names else None
            if handler is None:
                handler = self.http_method_not_allowed
            if asyncio.iscoroutinefunction(handler):
                response = await handler(request, *args, **kwargs)
            else:
                response = await db.run(handler, request, *args, **kwargs)
        except Exception as exc:
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return self.response


class _ImageEndpoint(V1APIView):
    endpoint = ""
    parser_classes = [StrictJSONParser]

    async def _files(self, request) -> dict:
        return {}

    def _fields(self, request):
        return request.data

    async def post(self, request):
        principal = request.user
        request_id = request._request.request_id

        async def compute() -> idempotency.StoredResponse:
            try:
                files = await self._files(request)
                outcome = await services.run(
                    endpoint=self.endpoint,
                    organization=principal.organization,
                    api_key=principal.api_key,
                    request_id=request_id,
                    data=self._fields(request),
                    files=files,
                    form=self.parser_classes != [StrictJSONParser],
                    base_url=_base_url(request),
                )
                headers = {"x-provider": outcome.provider, "x-request-id": request_id}
                return idempotency.StoredResponse(200, outcome.body, headers)
            except APIError as exc:  # 4xx are stored and replayed under an Idempotency-Key; 5xx are not
                return idempotency.StoredResponse(exc.status, exc.body(), {**exc.headers, "x-request-id": request_id})

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
                                         body=request.data)
            try:
                stored, replayed = await asyncio.shield(idempotency.run_once(
                    scope=str(principal.organization.pk), key=key, fingerprint=fp, compute=compute))
            except idempotency.IdempotencyConflict as exc:
                raise APIError(exc.message, status=409, code=exc.code) from exc
            except idempotency.IdempotencyInProgress as exc:
                raise APIError(exc.message, status=409, code=exc.code, headers={"retry-after": "1"}) from exc
            except idempotency.IdempotencyUnavailable as exc:
                raise ServerError(exc.message, status=503, code=exc.code, headers={"retry-after": "1"}) from exc
        headers = dict(stored.headers)
        # A replay answers with the first request's id (the middleware writes request.request_id on the way out).
        request._request.request_id = headers.pop("x-request-id", request_id)
        if replayed:
            headers[idempotency.REPLAYED_HEADER] = "true"
        return Response(stored.body, status=stored.status, headers=headers)


class ImageGenerationsView(_ImageEndpoint):
    """POST /v1/images/generations (JSON)."""

    endpoint = "generations"


class _MultipartImageEndpoint(_ImageEndpoint):
    parser_classes = [MultiPartParser, FormParser]

    def _fields(self, request):
        return {key: request.POST.get(key) for key in request.POST.keys()}

    async def _files(self, request) -> dict:
        """Every uploaded file, inspected by content (type, dimensions) off the event loop."""
        inspected = {}
        for field in request.FILES.keys():
            uploads = request.FILES.getlist(field)
            inspected[field] = [
                await asyncio.to_thread(images.inspect, upload.read(), param=field, filename=upload.name or field)
                for upload in uploads
            ]
        return inspected


class ImageEditsView(_MultipartImageEndpoint):
    """POST /v1/images/edits (multipart): `image` or repeated `image[]`, optional `mask`, `prompt`, ..."""

    endpoint = "edits"


class ImageVariationsView(_MultipartImageEndpoint):
    """POST /v1/images/variations (multipart): one `image`."""

    endpoint = "variations"


def model_object(spec: catalog.ModelSpec) -> dict:
    """OpenAI's model object, plus what our catalog knows (SDKs tolerate the extra keys)."""
    return {
        "id": spec.id,
        "object": "model",
        "created": spec.created,
        "owned_by": spec.owned_by,
        "providers": [p for p in spec.providers if p in registry()],
        "capabilities": sorted(spec.capabilities),
        "sizes": list(spec.sizes),
        "qualities": list(spec.qualities),
        "styles": list(spec.styles),
        "max_n": spec.max_n,
        "max_prompt_chars": spec.max_prompt_chars,
        "description": spec.description,
    }


class ModelListView(V1APIView):
    def get(self, request):
        models = catalog.available_models(set(registry()))
        return Response({"object": "list", "data": [model_object(m) for m in models]})


class ModelDetailView(V1APIView):
    def get(self, request, model_id: str):
        spec = catalog.get_model(model_id)
        if spec is None or not services.is_available(spec):
            raise ModelNotFound(model_id)
        return Response(model_object(spec))


def image_file(request, token: str, ext: str):
    """Serve a stored image behind its signed URL: 410 once expired, 404 if the token is forged or the image gone."""
    try:
        handle, content_type = storage.open_signed(token)
    except storage.ImageExpired:
        return JsonResponse(envelope("This image URL has expired. Image URLs are valid for 60 minutes.",
                                     type="invalid_request_error", code="url_expired"), status=410)
    except storage.ImageNotFound:
        return JsonResponse(envelope("Image not found.", type="invalid_request_error", code="not_found"), status=404)
    with handle:  # images are a few MB at most: one read, no sync iterator for the ASGI handler to drain
        response = HttpResponse(handle.read(), content_type=content_type)
    response["Cache-Control"] = "private, max-age=3600"
    return response


@csrf_exempt
def unknown_url(request, *args, **kwargs):
    return handler404(request)
