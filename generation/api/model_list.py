"""GET /v1/models and /v1/models/{id}: OpenAI's model objects, from the catalog, the providers switched on, the list
prices and the model lifecycle (generation/lifecycle.py): deprecated models are listed with their dates and
replacement; retired ones are not listed, and retrieving one answers 404 model_not_found naming its replacement."""
from datetime import UTC

from rest_framework.response import Response

from billing import selectors as billing_selectors
from generation import catalog, lifecycle
from generation.api.base import V1APIView
from generation.errors import ModelNotFound
from generation.pipeline import quote, router, service
from generation.providers import registry


def model_object(spec: catalog.ModelSpec, lc: lifecycle.Lifecycle | None = None) -> dict:
    """OpenAI's model object, plus what our catalog knows (SDKs tolerate the extra keys): the providers serving it
    here, capabilities, sizes, ..., and its lifecycle: `status` (active | deprecated), `deprecation_date` and
    `sunset_date` (unix seconds or null), `replacement` (a model id or null)."""
    return {
        "id": spec.id,
        "object": "model",
        "created": spec.created,
        "owned_by": spec.owned_by,
        "providers": router.candidates(spec, registry()),
        "capabilities": sorted(spec.capabilities),
        "sizes": list(spec.sizes),
        "qualities": list(spec.qualities),
        "styles": list(spec.styles),
        "max_n": spec.max_n,
        "max_prompt_chars": spec.max_prompt_chars,
        "description": spec.description,
        "pricing": pricing(spec),
        **(lc or lifecycle.Lifecycle(model=spec.id)).model_fields(),
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
        table = lifecycle.table()
        listed = []
        for spec in catalog.available_models(set(registry())):
            lc = lifecycle.of(spec.id, table)
            if service.is_available(spec) and lc.effective_status() != lifecycle.RETIRED:
                listed.append(model_object(spec, lc))
        return Response({"object": "list", "data": listed})


class ModelDetailView(V1APIView):
    def get(self, request, model_id: str):
        spec = catalog.get_model(model_id)
        if spec is None or not service.is_available(spec):
            raise ModelNotFound(model_id)
        lc = lifecycle.of(spec.id, lifecycle.table())
        if lc.effective_status() == lifecycle.RETIRED:
            raise lifecycle.ModelRetired(spec.id, lc.replacement)
        response = Response(model_object(spec, lc))
        for name, value in lc.headers().items():
            response[name] = value
        return response
