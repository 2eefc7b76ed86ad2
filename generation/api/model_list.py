"""GET /v1/models and /v1/models/{id}: OpenAI's model objects, from the catalog, the providers switched on and the
model lifecycle (generation/lifecycle.py): deprecated models are listed with their dates and replacement; retired
ones are not listed, and retrieving one answers 404 model_not_found naming its replacement."""
from rest_framework.response import Response

from generation import catalog, lifecycle
from generation.api.base import V1APIView
from generation.errors import ModelNotFound
from generation.pipeline import router, service
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
        **(lc or lifecycle.Lifecycle(model=spec.id)).model_fields(),
    }


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
