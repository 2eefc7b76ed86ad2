"""The /v1 API views: thin, async where they wait on upstreams. Work happens in services; errors in errors.py."""
import asyncio

from adrf.views import APIView
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from accounts import keys
from accounts.authentication import ApiKeyAuthentication, KeyPrincipal
from accounts.selectors import key_allows_model
from config import db

from generation import catalog
from generation.api import idempotency, ratelimit
from generation.pipeline import input_images as images, service as services, storage
from generation.api.parsers import StrictJSONParser, parse_json
from generation.api.errors import APIError, InvalidRequest, ModelNotFound, PermissionDenied, ServerError, envelope, error_response, handler404
from generation.providers import registry


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
            require_scope(principal.api_key, keys.SCOPE_GENERATE)
            await ratelimit.enforce(request, principal.api_key, principal.organization)
            if request.method != "POST":
                raise APIError(f'Method "{request.method}" not allowed.', status=405, code="method_not_allowed")
            async with images.KeptPixels():  # decoded input images kept for the request, given back at its end
                data, files = await self._read(request)
                return await self._generate(request, principal, data, files)
        except Exception as exc:  # every failure leaves in OpenAI's envelope
            return error_response(exc, request)

    async def _read(self, request) -> tuple[dict, dict]:
        """The JSON body (strict: parsers.py) and no files."""
        content_type = request.content_type or ""
        if not request.body:
            return {}, {}  # validation names the missing prompt
        if content_type != "application/json":
            raise APIError(f'Unsupported media type "{content_type}" in request. Send JSON with Content-Type: '
                           "application/json.", status=415, code="unsupported_media_type")
        return parse_json(request.body), {}  # ParseError → 400 invalid_json (errors.py)

    async def _generate(self, request, principal, data, files: dict) -> HttpResponse:
        request_id = request.request_id
        durable: tuple[str, str] | None = None  # (Idempotency-Key, fingerprint) once known
        earlier = {"replayed": False}

        async def compute() -> idempotency.StoredResponse:
            try:
                outcome = await services.run(
                    endpoint=self.endpoint, organization=principal.organization, api_key=principal.api_key,
                    request_id=request_id, data=data, files=files, form=bool(files) or self.multipart,
                    base_url=_base_url(request), idempotency_key=durable,
                )
                earlier["replayed"] = outcome.request_id is not None  # an earlier attempt's committed answer
                headers = {"x-provider": outcome.provider, "x-request-id": outcome.request_id or request_id}
                return idempotency.StoredResponse(200, outcome.body, headers)
            except APIError as exc:  # 4xx are stored and replayed under an Idempotency-Key; 5xx are not
                return idempotency.StoredResponse(exc.status, exc.body(), {**exc.headers, "x-request-id": request_id})

        # The key's model allow-list holds for replays too (a replay runs no validation): checked before anything.
        model_id = data.get("model") if isinstance(data, dict) else None
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
        return JsonResponse(stored.body, status=stored.status, headers=headers)

    def _fingerprint_body(self, data, files):
        return data


def require_scope(api_key, scope: str) -> None:
    """401 as OpenAI answers a restricted key without the permission (missing scopes named), code missing_scope."""
    if not api_key.has_scope(scope):
        raise APIError(f"You have insufficient permissions for this operation. Missing scopes: {scope}. This API "
                       f"key may: {', '.join(api_key.scopes) or 'nothing'}; create a key with this permission on the "
                       "dashboard's API keys page.", status=401, code="missing_scope")


async def authenticate(request) -> KeyPrincipal:
    """The API key of `Authorization: Bearer ...`, from the per-process key cache (accounts/authentication.py)."""
    return await ApiKeyAuthentication().authenticate_async(request)


class ImageGenerationsView(_ImageEndpoint):
    """POST /v1/images/generations (JSON)."""

    endpoint = "generations"


class _MultipartImageEndpoint(_ImageEndpoint):
    parser_classes = [MultiPartParser, FormParser]
    multipart = True

    async def _read(self, request) -> tuple[dict, dict]:
        """Form fields, and every uploaded file checked and decoded once (generation/pipeline/input_images.py), off the event loop
        and within the process's decode budget."""
        content_type = request.content_type or ""
        self._post, self._uploads = {}, {}
        if not content_type and request.META.get("CONTENT_LENGTH") in (None, "", "0"):
            return {}, {}  # validation names what is missing
        if content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
            raise APIError(f'Unsupported media type "{content_type}" in request. Send multipart/form-data.',
                           status=415, code="unsupported_media_type")

        def parse():
            try:
                return request.POST, request.FILES
            except MultiPartParserError as exc:
                raise APIError(f"We could not parse the body of your request: {exc}",
                               code="invalid_request_body") from exc

        self._post, self._uploads = await asyncio.to_thread(parse)
        fields = {key: self._post.get(key) for key in self._post.keys()}
        spec = catalog.get_model(fields.get("model") or catalog.DEFAULT_MODEL)
        rules = spec.input_images if spec is not None else None
        keep, limit = images.keep_policy(spec, fields.get("size"))
        max_pixels = rules.max_pixels if rules is not None else images.MAX_PIXELS
        uploads = []
        for field in self._uploads.keys():  # every header first: refuse what is too large before decoding any
            for upload in self._uploads.getlist(field):
                data = upload.read()
                uploads.append((field, data, upload.name or field, images.header(data, param=field,
                                                                                 max_pixels=max_pixels)))
        if keep:  # the built-in renderer's copies, reserved in one go before any decode
            await images.current_kept().reserve(sum(images.kept_size(w, h, limit) for *_, (_, w, h) in uploads))
        inspected: dict[str, list] = {}
        for field, data, filename, known in uploads:
            inspected.setdefault(field, []).append(await images.inspect(
                data, param=field, filename=filename, rules=rules, keep_pixels=keep, limit=limit, known=known))
        return fields, inspected

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
