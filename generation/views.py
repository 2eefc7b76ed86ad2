"""The /v1 API views: thin, async where they wait on upstreams. Work happens in services; errors in errors.py."""
from adrf.views import APIView
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from rest_framework.response import Response

from . import catalog, services, storage
from .errors import ModelNotFound, envelope
from .providers import registry


def _base_url(request) -> str:
    return settings.PUBLIC_BASE_URL or request.build_absolute_uri("/")


class ImageGenerationsView(APIView):
    async def post(self, request):
        principal = request.user
        outcome = await services.generate(
            organization=principal.organization,
            api_key=principal.api_key,
            request_id=request._request.request_id,
            data=request.data,
            base_url=_base_url(request),
        )
        return Response(outcome.body, headers={"x-provider": outcome.provider})


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


class ModelListView(APIView):
    def get(self, request):
        models = catalog.available_models(set(registry()))
        return Response({"object": "list", "data": [model_object(m) for m in models]})


class ModelDetailView(APIView):
    def get(self, request, model_id: str):
        spec = catalog.get_model(model_id)
        if spec is None or spec not in catalog.available_models(set(registry())):
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


def unknown_url(request, *args, **kwargs):
    from .errors import handler404

    return handler404(request)
