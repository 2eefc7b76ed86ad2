"""GET /v1/models and /v1/models/{id}: OpenAI's model objects, from the catalog and the providers switched on."""
from datetime import UTC

from rest_framework.response import Response

from billing import selectors as billing_selectors
from generation import catalog
from generation.api.base import V1APIView
from generation.errors import ModelNotFound
from generation.pipeline import quote, service
from generation.providers import registry


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
        "pricing": pricing(spec),
    }


def pricing(spec: catalog.ModelSpec) -> list[dict]:
    """Our list price per image for each size and quality the model offers ("auto" resolves to one of them:
    POST /v1/images/quote gives the range): [{"size", "quality", "unit_price" (USD), "unit_price_micros",
    "currency": "usd", "effective_from" (ISO 8601 UTC)}]. Combinations without a price are not served, so are left
    out."""
    rows = []
    for size, quality in quote.outcomes(spec, "auto", "auto"):
        price = billing_selectors.current_price(model=spec.id, size=size, quality=quality)
        if price is not None:
            rows.append({"size": size, "quality": quality, "unit_price": quote.usd(price.unit_price_micros),
                         "unit_price_micros": price.unit_price_micros, "currency": "usd",
                         "effective_from": price.effective_from.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    return rows


class ModelListView(V1APIView):
    def get(self, request):
        models = catalog.available_models(set(registry()))
        return Response({"object": "list", "data": [model_object(m) for m in models]})


class ModelDetailView(V1APIView):
    def get(self, request, model_id: str):
        spec = catalog.get_model(model_id)
        if spec is None or not service.is_available(spec):
            raise ModelNotFound(model_id)
        return Response(model_object(spec))
