"""POST /v1/images/quote: what a generation or an edit would cost, without generating or charging.

The body is the request's own: JSON as for /v1/images/generations, or multipart/form-data as for /v1/images/edits
(its images are checked as an edit's are, since they decide whether the edit is valid). It is validated exactly as
the real request would be (model, key's allowed models, sizes, qualities, n, `max_cost`), then priced from the list
(generation/pipeline/quote.py). No upstream is called, no rate limit or spend is used, nothing is written.

Answer (200): {"object": "image.quote", "model", "size", "quality", "n", "currency": "usd", "unit_price" (USD per
image: for "auto", the dearest outcome), "cost" (USD: unit_price × n), "price_version" (when the prices used took
effect, ISO 8601 UTC), "range" (for "auto" sizes or qualities: {"min", "max", "unit_min", "unit_max"})}, and
"within_max_cost" (true/false) when the body carries `max_cost`. Errors are the generation's own (400
invalid_parameter, invalid_size, 403 model_not_allowed, 404 model_not_found, ...).
"""
from django.http import HttpResponse, JsonResponse

from accounts import keys
from generation.api import images
from generation.api.base import authenticate, require_scope
from generation.errors import APIError, error_response
from generation.pipeline import input_images, service
from generation.pipeline import quote as pricing
from generation.pipeline.validation import validate


class QuoteView(images.ImageEndpoint):
    """POST /v1/images/quote (JSON like a generation, or multipart like an edit)."""

    endpoint = "quote"

    async def serve(self, request) -> HttpResponse:
        try:
            request.get_host()
            principal = await authenticate(request)
            require_scope(principal.api_key, keys.SCOPE_GENERATE)
            if request.method != "POST":
                raise APIError(f'Method "{request.method}" not allowed.', status=405, code="method_not_allowed")
            async with input_images.KeptPixels():
                if (request.content_type or "") in ("multipart/form-data", "application/x-www-form-urlencoded"):
                    form = await images.read_form(request)
                    endpoint, data, files = "edits", form.fields, form.inspected
                else:
                    endpoint, (data, files) = "generations", await images.read_json(request)
                call = validate(endpoint, data, files=files, form=endpoint == "edits",
                                is_available=service.is_available, api_key=principal.api_key)
            req = call.request
            q = await pricing.quote(call.spec, size=req.size, quality=req.quality, n=req.n)
            body = q.as_json()
            if call.max_cost_micros is not None:
                body["within_max_cost"] = q.cost_micros <= call.max_cost_micros
            return JsonResponse(body)
        except Exception as exc:  # every failure leaves in OpenAI's envelope
            return error_response(exc, request)
