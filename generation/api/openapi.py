"""The OpenAPI 3 description of /v1, served at /v1/openapi.json and rendered for humans at /docs/api/.

Documentation only: the serializers below are never used to parse a request (validation.py does that, with
OpenAI's error semantics). They describe what the views accept and answer, and are attached to the view classes
by `annotate()` at import (generation/api/urls.py imports this module), so the endpoint modules carry no schema code.

What keeps the description true as the code changes:
  * request fields are built from `validation.FIELDS` / `validation.FILE_FIELDS` (a field added there appears
    here; tests/test_openapi.py fails if it has no documentation entry in `_FIELD_DOCS`);
  * every allowed value (models, sizes, qualities, styles, formats, limits) is read from `catalog.MODELS` when the
    schema is generated, restricted to the models that can serve the endpoint;
  * tests/test_openapi.py runs Schemathesis against the live server: no 5xx, and every response (status code,
    content type, headers, body) matches this description.

The views are annotated with class-level `extend_schema` (one HTTP method per view), not `extend_schema_view`: the
latter wraps inherited handlers in a sync function, which would turn adrf's async `post` into a sync handler.
"""
from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiRequest,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import serializers

from generation import catalog, errors
from generation.api import images, jobs, model_list, streaming, webhooks
from generation.api import quote as quote_api
from generation.pipeline import quote, validation
from generation.providers import registry

SECURITY_SCHEME = "bearerAuth"
EXAMPLE_BASE_URL = "http://127.0.0.1:8000"  # the reference page swaps in the server it is served from

MODES = validation.MODE  # endpoint -> capability ("generations" -> "generate", ...)



# --- Catalog-derived values ---------------------------------------------------------------------------------------

def all_models() -> list[catalog.ModelSpec]:
    """The catalog, complete: building the provider registry first registers runtime models (self-hosted ones)."""
    registry()
    return list(catalog.MODELS.values())


def models_for(endpoint: str) -> list[catalog.ModelSpec]:
    """The catalog's models that can serve /v1/images/{endpoint}, in catalog order."""
    return [m for m in all_models() if m.supports(MODES[endpoint])]


def _union(models, attr: str) -> list:
    values: dict = {}
    for model in models:
        for value in getattr(model, attr):
            values.setdefault(value, None)
    return list(values)


def _names(models, limit: int = 4) -> str:
    """The models' ids, or "N models" when there are more than `limit` (the Models table lists them)."""
    if len(models) > limit:
        return f"{len(models)} models (see the models table)"
    return ", ".join(m.id for m in models) or "no model"


_PER_MODEL = (" Each model's values and defaults are in this document's `x-imagegate-models` table (the values also "
              "in its model object, GET /v1/models).")


def _per_model(models, render) -> str:
    """Per-model facts, models with the same value grouped: "4000: local-preview, dall-e-3; 1000: dall-e-2"."""
    groups: dict[str, list[str]] = {}
    for model in models:
        groups.setdefault(str(render(model)), []).append(model.id)
    if len(groups) == 1:
        return f"{next(iter(groups))} for every model"
    return "; ".join(f"{value}: {', '.join(ids)}" for value, ids in groups.items())


def model_table() -> list[dict]:
    """The catalog as data (the document's `x-imagegate-models`): which values each model takes."""
    return [{
        "id": m.id, "owned_by": m.owned_by, "providers": list(m.providers), "capabilities": sorted(m.capabilities),
        "sizes": list(m.sizes), "default_size": m.default_size,
        "qualities": list(m.qualities), "default_quality": m.default_quality,
        "styles": list(m.styles), "default_style": m.default_style,
        "response_formats": list(m.response_formats), "max_n": m.max_n, "max_prompt_chars": m.max_prompt_chars,
        "backgrounds": list(m.backgrounds), "moderations": list(m.moderations),
        "output_formats": list(m.output_formats), "output_compression": m.output_compression,
        "input_images": {"max_images": m.input_images.max_images, "max_bytes": m.input_images.max_bytes,
                         "content_types": list(m.input_images.content_types), "square": m.input_images.square}
        if m.capabilities & {"edit", "variation", "image_input"} else None,
        "description": m.description,
    } for m in all_models()]


# --- Request bodies -------------------------------------------------------------------------------------------------

def _choice(values, help_text: str, *, nullable: bool, default=serializers.empty):
    kwargs = {} if default is serializers.empty else {"default": default}
    return serializers.ChoiceField(choices=list(values), required=False, allow_null=nullable, help_text=help_text,
                                   **kwargs)


def _int(lo: int, hi: int, help_text: str, *, nullable: bool, default=serializers.empty):
    kwargs = {} if default is serializers.empty else {"default": default}
    return serializers.IntegerField(min_value=lo, max_value=hi, required=False, allow_null=nullable,
                                    help_text=help_text, **kwargs)


def _f_prompt(endpoint, models, nullable):
    longest = max(m.max_prompt_chars for m in models)
    return serializers.CharField(
        required=True, min_length=1, max_length=longest, trim_whitespace=False,
        help_text="What to draw (or, for edits, what to change). It must contain more than white space. Maximum "
                  f"length (characters): {_per_model(models, lambda m: m.max_prompt_chars)}.",
    )


def _f_model(endpoint, models, nullable):
    default = catalog.DEFAULT_MODEL if catalog.DEFAULT_MODEL in [m.id for m in models] else serializers.empty
    return _choice([m.id for m in models],
                   f"The model. Default: {catalog.DEFAULT_MODEL}. The enum is the catalog's models that can serve "
                   "this endpoint; GET /v1/models lists those enabled on this server, and a model that is not "
                   "enabled answers 404 model_not_found.", nullable=nullable, default=default)


def _f_n(endpoint, models, nullable):
    return _int(1, max(m.max_n for m in models),
                f"How many images. Default 1. Maximum: {_per_model(models, lambda m: m.max_n)}.",
                nullable=nullable, default=1)


def _f_size(endpoint, models, nullable):
    free = [m for m in models if m.free_sizes is not None]
    note = "".join(f" {m.id} also takes {m.free_sizes.describe()}." for m in free)
    return _choice(_union(models, "sizes"),
                   "Width x height in pixels; default: the model's default_size. A size the model does not offer "
                   f"answers 400 invalid_size, naming the rule it breaks.{note}{_PER_MODEL}", nullable=nullable)


def _f_input_fidelity(endpoint, models, nullable):
    owners = [m for m in models if m.input_fidelities]
    return _choice(_union(models, "input_fidelities"),
                   "How closely the edit keeps the input images' features (faces, style): high or low, for "
                   f"{_names(owners)} only ({_per_model(owners, lambda m: ', '.join(m.input_fidelities))}); other "
                   "models answer 400 invalid_parameter. Default: the upstream's (low).", nullable=nullable)


def _f_quality(endpoint, models, nullable):
    return _choice(_union(models, "qualities"),
                   f"Rendering quality; default: the model's default_quality.{_PER_MODEL}", nullable=nullable)


def _f_style(endpoint, models, nullable):
    styled = [m for m in models if m.styles]
    return _choice(_union(models, "styles"),
                   f"Image style, for {_names(styled)} only; default: the model's default_style.{_PER_MODEL}",
                   nullable=nullable)


def _f_response_format(endpoint, models, nullable):
    base64_only = [m for m in models if not m.response_formats]
    note = (f" Models that always answer b64_json refuse this field (400 unknown_parameter): {_names(base64_only)}."
            if base64_only else "")
    return _choice(_union(models, "response_formats") or list(catalog.RESPONSE_FORMATS),
                   "`url` (a signed link to the image, valid for 60 minutes) or `b64_json` (the image inline). "
                   f"Default: url.{note}", nullable=nullable)


def _gpt_image_choice(attr: str, what: str):
    def factory(endpoint, models, nullable):
        owners = [m for m in models if getattr(m, attr)]
        return _choice(_union(models, attr), f"{what} For {_names(owners)} only (default auto).",
                       nullable=nullable)
    return factory


def _f_output_format(endpoint, models, nullable):
    owners = [m for m in models if m.output_formats]
    return _choice(_union(models, "output_formats"),
                   f"File format of the images, for {_names(owners)} only. Default png.", nullable=nullable)


def _f_output_compression(endpoint, models, nullable):
    owners = [m for m in models if m.output_compression]
    return _int(0, 100, f"Compression level 0-100 for jpeg and webp output, for {_names(owners)} only. Default 100; "
                        "below 100 needs output_format jpeg or webp.", nullable=nullable)


def _f_stream(endpoint, models, nullable):
    return serializers.BooleanField(
        required=False, allow_null=nullable, default=False,
        help_text="Answer with Server-Sent Events (text/event-stream) instead of JSON, as OpenAI does: partial images "
                  f"as the upstream makes them, then one `{streaming.EVENT_PREFIX[endpoint]}.completed` event per "
                  "image carrying `usage` (the cost). Every model streams; only those whose upstream streams (the "
                  "OpenAI gpt-image models) send partial images. Images come as b64_json (response_format url is "
                  "refused). Errors before the first event answer JSON with their status; a failure after it is "
                  "an `error` event. Default false.")


def _f_partial_images(endpoint, models, nullable):
    return _int(0, validation.MAX_PARTIAL_IMAGES,
                "With `stream: true`: how many partial images (0-3) to ask the upstream for. The upstream may send "
                "fewer, and the final image may come before all of them; models whose upstream cannot stream send "
                "none. Ignored without `stream`. Default 0.", nullable=nullable, default=0)


def _f_user(endpoint, models, nullable):
    return serializers.CharField(required=False, allow_null=nullable, allow_blank=True,
                                 max_length=validation.MAX_USER_CHARS, trim_whitespace=False,
                                 help_text="Your identifier for the end user. Recorded on the request's ledger row "
                                           "(usage API: group_by=user), counted against your monthly limit per end "
                                           "user, and sent upstream only as a keyed hash.")


def _f_safety_identifier(endpoint, models, nullable):
    return serializers.CharField(required=False, allow_null=nullable, allow_blank=True,
                                 max_length=validation.MAX_USER_CHARS, trim_whitespace=False,
                                 help_text="OpenAI's newer name for `user`; when both are sent this one names the "
                                           "end user.")


def _f_provider(endpoint, models, nullable):
    return _choice(_union(models, "providers"),
                   "Imagegate extension: pin the upstream provider instead of letting the gateway route; it must "
                   f"be one of the model's providers.{_PER_MODEL}", nullable=nullable)


def _f_seed(endpoint, models, nullable):
    return _int(0, 2**32 - 1, "Imagegate extension: a seed for reproducible images where the provider supports "
                              "it (local-preview does).", nullable=nullable)


def _f_max_cost(endpoint, models, nullable):
    return serializers.FloatField(
        required=False, allow_null=nullable, min_value=0.000001, max_value=quote.MAX_COST_LIMIT_USD,
        help_text="Imagegate extension: the most this request may cost, in US dollars. It is checked against the "
                  "list price before any upstream call (for \"auto\" sizes or qualities, against the dearest "
                  "outcome); over it the request is refused with 400 `cost_limit_exceeded` naming the price, and "
                  "nothing is generated or charged. Without it the API key's default ceiling applies, if it has "
                  "one. POST /v1/images/quote says what a request costs.")


def _f_image_url(endpoint, models, nullable):
    owners = [m for m in models if m.supports("image_input")]
    return serializers.URLField(
        required=False, allow_null=nullable,
        help_text=f"Imagegate extension: the http(s) URL of an input image to modify, for {_names(owners)} "
                  "(capability image_input). Only public addresses on ports 80 and 443 are fetched; a URL that does "
                  "not yield an image the model accepts answers 400 invalid_image_url (or another image error).",
    )


def _input_rules(model: catalog.ModelSpec, *, several: bool) -> str:
    rules = model.input_images
    return (f"{rules.describe_types()} up to {rules.max_bytes // 1_048_576} MB"
            + (", square" if rules.square else "")
            + (f", up to {rules.max_images} images" if several and rules.max_images > 1 else ""))


def _f_image_file(endpoint, models, nullable):
    if endpoint == "edits":
        text = ("The image to edit. Send one `image` part, or several `image[]` parts (at least one of the two). "
                f"Accepted: {_per_model(models, lambda m: _input_rules(m, several=True))}.")
    else:
        accepted = _per_model(models, lambda m: _input_rules(m, several=False))
        text = f"The image to vary (exactly one). Accepted: {accepted}."
    return serializers.FileField(required=endpoint == "variations", help_text=text)


def _f_image_array(endpoint, models, nullable):
    return serializers.ListField(
        child=serializers.FileField(), required=False, min_length=1,
        max_length=max(m.input_images.max_images for m in models),
        help_text="Several input images, as repeated `image[]` parts (OpenAI's SDKs send a list this way). "
                  f"At most: {_per_model(models, lambda m: m.input_images.max_images)}.",
    )


def _f_mask(endpoint, models, nullable):
    return serializers.FileField(
        required=False,
        help_text="A PNG with an alpha channel, the same size as the (first) image: fully transparent pixels mark "
                  "the area to edit.",
    )


_FIELD_DOCS = {
    "prompt": _f_prompt,
    "model": _f_model,
    "n": _f_n,
    "size": _f_size,
    "quality": _f_quality,
    "style": _f_style,
    "response_format": _f_response_format,
    "user": _f_user,
    "background": _gpt_image_choice("backgrounds", "Background of the image: transparent needs output_format png "
                                                   "or webp."),
    "moderation": _gpt_image_choice("moderations", "Strictness of the upstream's own moderation."),
    "output_format": _f_output_format,
    "output_compression": _f_output_compression,
    "input_fidelity": _f_input_fidelity,
    "stream": _f_stream,
    "partial_images": _f_partial_images,
    "provider": _f_provider,
    "seed": _f_seed,
    "max_cost": _f_max_cost,
    "safety_identifier": _f_safety_identifier,
}
_FILE_FIELD_DOCS = {"image": _f_image_file, "image[]": _f_image_array, "mask": _f_mask}
# A field named in validation.FIELDS must be documented: the generations `image` is a URL, elsewhere a file.
_URL_FIELD_DOCS = {"image": _f_image_url}


def undocumented_fields(endpoint: str) -> set[str]:
    """Fields the endpoint accepts that this module cannot describe (tests assert there are none)."""
    scalar = set(validation.FIELDS[endpoint]) - set(validation.FILE_FIELDS[endpoint])
    known = set(_FIELD_DOCS) | (set(_URL_FIELD_DOCS) if endpoint == "generations" else set())
    return (scalar - known) | (set(validation.FILE_FIELDS[endpoint]) - set(_FILE_FIELD_DOCS))


# Field order in the schema: OpenAI's order, then anything else alphabetically.
_ORDER = ["prompt", "image", "image[]", "mask", "model", "n", "size", "quality", "style", "response_format",
          "background", "moderation", "output_format", "output_compression", "input_fidelity", "stream",
          "partial_images", "user", "safety_identifier", "provider", "seed", "max_cost"]


def request_fields(endpoint: str) -> dict[str, serializers.Field]:
    """The documented fields of a request to /v1/images/{endpoint}, built from validation and the catalog now."""
    models = models_for(endpoint)
    form = endpoint != "generations"
    files = set(validation.FILE_FIELDS[endpoint])
    names = set(validation.FIELDS[endpoint]) | files
    ordered = sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))
    fields = {}
    for name in ordered:
        if name in files:
            factory = _FILE_FIELD_DOCS.get(name)
        elif endpoint == "generations" and name in _URL_FIELD_DOCS:
            factory = _URL_FIELD_DOCS[name]
        else:
            factory = _FIELD_DOCS.get(name)
        if factory is None:  # accepted but not yet documented: say so rather than omit it
            fields[name] = serializers.CharField(required=False, help_text="(undocumented)")
            continue
        # JSON takes null for "the default"; a multipart form has no null, only absent fields.
        fields[name] = factory(endpoint, models, not form)
    return fields


class _RequestSerializer(serializers.Serializer):
    endpoint = ""

    def get_fields(self):
        return request_fields(self.endpoint)


class ImageGenerationSerializer(_RequestSerializer):
    """Create images from a prompt (JSON). Optional fields may be omitted or null: the model's default applies."""

    endpoint = "generations"


class ImageEditSerializer(_RequestSerializer):
    """Edit or extend images given a prompt (multipart/form-data)."""

    endpoint = "edits"


class ImageVariationSerializer(_RequestSerializer):
    """Variations of one image (multipart/form-data)."""

    endpoint = "variations"


# --- Responses ----------------------------------------------------------------------------------------------------

class ImageSerializer(serializers.Serializer):
    """One generated image: `url` or `b64_json`, as asked by response_format."""

    url = serializers.URLField(required=False, help_text="Signed URL of the PNG; valid for 60 minutes, then 410.")
    b64_json = serializers.CharField(required=False, help_text="The image file, base64-encoded.")
    revised_prompt = serializers.CharField(required=False, allow_blank=True,
                                           help_text="The prompt the model drew (generations and edits).")


class InputTokensDetailsSerializer(serializers.Serializer):
    """OpenAI's `usage.input_tokens_details`."""

    text_tokens = serializers.IntegerField(min_value=0, help_text="Text tokens in the input (the prompt).")
    image_tokens = serializers.IntegerField(min_value=0, help_text="Image tokens in the input (edit images).")


class OutputTokensDetailsSerializer(serializers.Serializer):
    """OpenAI's `usage.output_tokens_details` (when the upstream reports it)."""

    text_tokens = serializers.IntegerField(min_value=0)
    image_tokens = serializers.IntegerField(min_value=0)


class ImageUsageSerializer(serializers.Serializer):
    """OpenAI's token usage (the upstream's counts when it reports them, as OpenAI's GPT image models do, else zeros)
    and Imagegate's extension: what the request cost and how long it took. With the official Python SDK:
    `result.usage.total_tokens`, `result.usage.model_extra["cost"]`."""

    input_tokens = serializers.IntegerField(min_value=0, help_text="Tokens (text and images) in the input.")
    input_tokens_details = InputTokensDetailsSerializer()
    output_tokens = serializers.IntegerField(min_value=0, help_text="Tokens the model produced.")
    total_tokens = serializers.IntegerField(min_value=0, help_text="input_tokens + output_tokens.")
    output_tokens_details = OutputTokensDetailsSerializer(required=False)
    cost = serializers.FloatField(min_value=0, help_text="Charged, in USD (n x the model's price per image).")
    latency_ms = serializers.IntegerField(min_value=0, help_text="Time spent serving the request, in ms.")
    image_size = serializers.CharField(help_text="The size of the images produced.")
    model_used = serializers.CharField(help_text="The model that produced them (for the alias chatgpt-image-latest, "
                                                 "the dated model that served the request).")


class ImagesResponseSerializer(serializers.Serializer):
    """OpenAI's images response, plus `usage`; gpt-image models also echo background, output_format, quality, size."""

    created = serializers.IntegerField(help_text="Unix time (seconds) of the response.")
    data = ImageSerializer(many=True)

    def get_fields(self):
        fields = super().get_fields()
        gpt = [m for m in all_models() if m.output_formats]
        owners = _names(gpt) or "no model"
        fields["background"] = serializers.ChoiceField(choices=["transparent", "opaque"], required=False,
                                                       help_text=f"{owners} only: the background produced (as "
                                                                 "the upstream answered; absent when unknown).")
        fields["output_format"] = serializers.ChoiceField(choices=_union(gpt, "output_formats"), required=False,
                                                          help_text=f"{owners} only: the file format produced.")
        fields["quality"] = serializers.ChoiceField(choices=["low", "medium", "high"], required=False,
                                                    help_text=f"{owners} only: the quality produced ('auto' "
                                                              "resolved).")
        fields["size"] = serializers.CharField(required=False, help_text=f"{owners} only: the size produced, "
                                                                         "WIDTHxHEIGHT ('auto' resolved).")
        fields["usage"] = ImageUsageSerializer()
        return fields


def _stream_events(prefix: str, title: str) -> PolymorphicProxySerializer:
    """The events of a stream (generation/api/streaming.py), as OpenAI's SDK types them."""
    common = {
        "b64_json": serializers.CharField(help_text="The image, base64-encoded."),
        "created_at": serializers.IntegerField(help_text="Unix time (seconds)."),
        "size": serializers.CharField(help_text="The size of the image."),
        "quality": serializers.ChoiceField(choices=list(streaming.EVENT_QUALITIES),
                                           help_text="Its quality (auto for models without these qualities)."),
        "background": serializers.ChoiceField(choices=["transparent", "opaque", "auto"],
                                              help_text="Its background (auto when the model does not say)."),
        "output_format": serializers.ChoiceField(choices=["png", "jpeg", "webp"], help_text="Its file format."),
    }
    partial = type(f"{title}PartialImageEventSerializer", (serializers.Serializer,), {
        "__doc__": "A partial image, as the upstream streamed it; the fields are the requested image's settings.",
        "type": serializers.ChoiceField(choices=[f"{prefix}.partial_image"]), **common,
        "partial_image_index": serializers.IntegerField(min_value=0, help_text="0-based index of the partial "
                                                                               "image."),
    })
    completed = type(f"{title}CompletedEventSerializer", (serializers.Serializer,), {
        "__doc__": "One final image (one event per image), with the request's usage (cost of all n images).",
        "type": serializers.ChoiceField(choices=[f"{prefix}.completed"]), **common,
        "usage": ImageUsageSerializer(),
    })
    error = type(f"{title}StreamErrorSerializer", (serializers.Serializer,), {
        "__doc__": "The request failed after the stream began: the error envelope; nothing is charged.",
        "type": serializers.ChoiceField(choices=["error"]), "error": ErrorDetailSerializer(),
    })
    return PolymorphicProxySerializer(
        component_name=f"{title}StreamEvent", resource_type_field_name="type",
        serializers={f"{prefix}.partial_image": partial, f"{prefix}.completed": completed, "error": error})


class PriceSerializer(serializers.Serializer):
    size = serializers.CharField()
    quality = serializers.CharField()
    unit_price = serializers.FloatField(help_text="USD per image.")
    unit_price_micros = serializers.IntegerField(min_value=1, help_text="The same in micro-USD (exact).")
    currency = serializers.ChoiceField(choices=["usd"])
    effective_from = serializers.CharField(help_text="When this price took effect (ISO 8601, UTC).")


class ImageJobSerializer(serializers.Serializer):
    """An async image job (`Prefer: respond-async`): its state; on success the synchronous answer's `data` and
    `usage` (and gpt-image's echoed fields), on failure OpenAI's error object."""

    id = serializers.CharField(help_text="The job's id, imgjob_...")
    object = serializers.ChoiceField(choices=["image.job"])
    status = serializers.ChoiceField(choices=["queued", "running", "succeeded", "failed", "cancelled"])
    created = serializers.IntegerField(help_text="Unix time (seconds) the job was created.")
    model = serializers.CharField(help_text="The model asked for.")
    endpoint = serializers.ChoiceField(choices=list(jobs.job_service.ASYNC_ENDPOINTS))
    request_id = serializers.CharField(help_text="The request id of the job's usage record (x-request-id).")
    parameters = serializers.DictField(help_text="The request's fields as sent, without the prompt.")
    started_at = serializers.IntegerField(allow_null=True, help_text="Unix time the job first started, or null.")
    finished_at = serializers.IntegerField(allow_null=True, help_text="Unix time the job ended, or null.")
    expires_at = serializers.IntegerField(
        allow_null=True, help_text="Unix time after which the job and its image URLs are gone (the URLs' lifetime "
                                   "after the job ended), or null while it runs.")

    def get_fields(self):
        fields = super().get_fields()
        for name, field in ImagesResponseSerializer().get_fields().items():
            if name != "created":
                field.required = False
                fields[name] = field
        fields["error"] = ErrorDetailSerializer(required=False, help_text="Why the job failed (status failed).")
        return fields


class ImageJobListSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = ImageJobSerializer(many=True)
    first_id = serializers.CharField(allow_null=True)
    last_id = serializers.CharField(allow_null=True)
    has_more = serializers.BooleanField()


_WEBHOOK_EVENTS = list(webhooks.webhooks.EVENTS)


class WebhookEndpointRequestSerializer(serializers.Serializer):
    """A webhook endpoint to register (docs/webhooks.md)."""

    url = serializers.URLField(max_length=2000, help_text="The https URL to POST events to.")
    description = serializers.CharField(required=False, allow_blank=True, max_length=200)
    enabled_events = serializers.ListField(
        child=serializers.ChoiceField(choices=[*_WEBHOOK_EVENTS, "*"]), required=False, min_length=1,
        help_text="The events to send (default, or '*': all of them).")


class WebhookEndpointSerializer(serializers.Serializer):
    """A webhook endpoint; `secret` only in the answers to create and rotate_secret."""

    id = serializers.CharField(help_text="we_...")
    object = serializers.ChoiceField(choices=["webhook_endpoint"])
    url = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    enabled_events = serializers.ListField(child=serializers.ChoiceField(choices=_WEBHOOK_EVENTS))
    created = serializers.IntegerField(help_text="Unix time (seconds).")
    secret = serializers.CharField(required=False, help_text="whsec_...: signs deliveries; shown only once.")


class WebhookEndpointListSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = WebhookEndpointSerializer(many=True)
    has_more = serializers.BooleanField()


class WebhookEndpointDeletedSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.ChoiceField(choices=["webhook_endpoint"])
    deleted = serializers.BooleanField()


class ModelSerializer(serializers.Serializer):
    """OpenAI's model object, plus what the catalog knows about the model (SDKs keep the extra keys)."""

    id = serializers.CharField(help_text="The model id (it may contain '/').")
    object = serializers.ChoiceField(choices=["model"])
    created = serializers.IntegerField(help_text="Unix time (seconds).")
    owned_by = serializers.CharField()
    providers = serializers.ListField(child=serializers.CharField(),
                                      help_text="The enabled providers serving it, in routing order.")
    sizes = serializers.ListField(child=serializers.CharField())
    qualities = serializers.ListField(child=serializers.CharField())
    styles = serializers.ListField(child=serializers.CharField())
    max_n = serializers.IntegerField(min_value=1)
    max_prompt_chars = serializers.IntegerField(min_value=1)
    description = serializers.CharField(allow_blank=True)
    pricing = PriceSerializer(many=True, help_text="Our list price per image, per size and quality (Imagegate).")
    status = serializers.ChoiceField(choices=["active", "deprecated"],
                                     help_text="The model's lifecycle: a deprecated model still serves (with "
                                               "Deprecation and Sunset headers) until its sunset_date; retired "
                                               "models are not listed.")
    deprecation_date = serializers.IntegerField(allow_null=True, help_text="Unix time (seconds) it was or will be "
                                                                           "deprecated, or null.")
    sunset_date = serializers.IntegerField(allow_null=True, help_text="Unix time (seconds) it stops being served, "
                                                                      "or null.")
    replacement = serializers.CharField(allow_null=True, help_text="The model to use instead, or null.")

    def get_fields(self):
        fields = super().get_fields()
        capabilities = sorted({c for m in all_models() for c in m.capabilities})
        fields["capabilities"] = serializers.ListField(
            child=serializers.ChoiceField(choices=capabilities),
            help_text="generate, edit, variation; image_input = takes an `image` URL on generations.")
        return fields


class QuoteRangeSerializer(serializers.Serializer):
    min = serializers.FloatField(help_text="USD: the cheapest outcome × n.")
    max = serializers.FloatField(help_text="USD: the dearest outcome × n (what max_cost is held to).")
    unit_min = serializers.FloatField(help_text="USD per image, cheapest outcome.")
    unit_max = serializers.FloatField(help_text="USD per image, dearest outcome.")


class QuoteSerializer(serializers.Serializer):
    """What a request would cost (POST /v1/images/quote); nothing is generated or charged."""

    object = serializers.ChoiceField(choices=["image.quote"])
    model = serializers.CharField()
    size = serializers.CharField(help_text="As asked (\"auto\" stays auto: see range).")
    quality = serializers.CharField(help_text="As asked (\"auto\" stays auto: see range).")
    n = serializers.IntegerField(min_value=1)
    currency = serializers.ChoiceField(choices=["usd"])
    unit_price = serializers.FloatField(help_text="USD per image (for \"auto\": the dearest outcome).")
    cost = serializers.FloatField(help_text="USD: unit_price × n, the most the request can cost.")
    price_version = serializers.CharField(help_text="When the prices used took effect (ISO 8601, UTC).")
    range = QuoteRangeSerializer(required=False, help_text="Only for \"auto\" sizes or qualities.")
    within_max_cost = serializers.BooleanField(required=False, help_text="Only when the body has max_cost.")


class ModelListSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = ModelSerializer(many=True)


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField(allow_blank=True, help_text="What went wrong, for humans; names allowed values.")
    type = serializers.CharField(help_text="invalid_request_error, requests (rate limits) or server_error.")
    param = serializers.CharField(allow_null=True, help_text="The request field at fault, or null.")
    code = serializers.CharField(allow_null=True, help_text="A stable machine-readable code, or null.")


class ErrorSerializer(serializers.Serializer):
    """OpenAI's error envelope: every non-2xx answer of /v1, with all four keys always present."""

    error = ErrorDetailSerializer()


# --- Headers --------------------------------------------------------------------------------------------------------

_IMAGE_STATUSES = [200, 400, 401, 403, 404, 409, 413, 415, 429, 500, 502, 503, 504]
_JOB_STATUSES = [200, 400, 401, 403, 404, 429, 500]
_JOB_CANCEL_STATUSES = [200, 400, 401, 403, 404, 409, 429, 500]
_MODEL_LIST_STATUSES = [200, 401, 403, 429, 500]
_QUOTE_STATUSES = [200, 400, 401, 403, 404, 413, 415, 500, 503]
_MODEL_DETAIL_STATUSES = [200, 401, 403, 404, 429, 500]
_AUTHENTICATED = [s for s in _IMAGE_STATUSES if s not in (401, 413)]  # responses that passed authentication

_ERROR_DESCRIPTIONS = {
    400: "Invalid request: bad JSON, a missing, unknown or badly typed field, a value the model does not accept, an "
         "unusable input image, or a prompt refused by the safety system.",
    401: "No API key, or an unknown or revoked one.",
    403: "The API key may not perform this request.",
    404: "Unknown, disabled or retired model (model_not_found; a retired model's message names its replacement), or "
         "no such job (not_found).",
    409: "Idempotency-Key conflict: reused with another request, or that request is still running; or the job can "
         "no longer be cancelled (job_not_cancellable).",
    413: "The request body is over the size limit (request_too_large).",
    415: "Unsupported Content-Type.",
    429: "Rate limit reached (rate_limit_exceeded); wait for retry-after.",
    500: "Internal error; retry, quoting x-request-id if it persists.",
    502: "The upstream provider failed (upstream_error); nothing was charged.",
    503: "Temporarily unavailable: no price configured for this model/size/quality (model_unavailable), the "
         "idempotency store is down (idempotency_unavailable) or jobs cannot be queued (job_queue_unavailable).",
    504: "The upstream provider timed out (upstream_timeout); nothing was charged.",
}


def _headers(statuses: list[int], *, images: bool) -> list[OpenApiParameter]:
    authenticated = [s for s in statuses if s not in (401, 413)]
    headers = [
        OpenApiParameter("x-request-id", {"type": "string", "pattern": "^req_"}, OpenApiParameter.HEADER,
                         required=True, response=statuses,
                         description="Identifies the request in our logs and your usage; quote it to support."),
        OpenApiParameter("x-ratelimit-limit-requests", {"type": "integer", "minimum": 0}, OpenApiParameter.HEADER,
                         response=authenticated,
                         description="Requests per minute allowed by the binding limit (the key's or the "
                                     "organization's, whichever has fewer left)."),
        OpenApiParameter("x-ratelimit-remaining-requests", {"type": "integer", "minimum": 0}, OpenApiParameter.HEADER,
                         response=authenticated, description="Requests that could be made right now."),
        OpenApiParameter("x-ratelimit-reset-requests", {"type": "string", "pattern": r"^(\d+h)?(\d+m)?[\d.]+m?s$"},
                         OpenApiParameter.HEADER, response=authenticated,
                         description="Time until the limit is fully restored, e.g. 1s, 6m0s, 12ms."),
        OpenApiParameter("retry-after", {"type": "integer", "minimum": 1}, OpenApiParameter.HEADER,
                         response=[s for s in statuses if s in (409, 429, 503)],
                         description="Seconds to wait before retrying."),
        OpenApiParameter("retry-after-ms", {"type": "integer", "minimum": 1}, OpenApiParameter.HEADER,
                         response=[s for s in statuses if s == 429],
                         description="Milliseconds to wait before retrying (OpenAI's SDKs honour it)."),
        OpenApiParameter("www-authenticate", {"type": "string"}, OpenApiParameter.HEADER,
                         response=[s for s in statuses if s == 401], description='Bearer realm="api".'),
    ]
    if 202 in statuses:
        headers += [
            OpenApiParameter("Prefer", {"type": "string", "enum": ["respond-async"]}, OpenApiParameter.HEADER,
                             required=False,
                             description="`respond-async` (RFC 7240): answer 202 with an image job at once and "
                                         "run the request in the background (generations and edits)."),
            OpenApiParameter("location", {"type": "string", "pattern": "^/v1/images/jobs/imgjob_"},
                             OpenApiParameter.HEADER, required=True, response=[202],
                             description="The job's URL."),
            OpenApiParameter("preference-applied", {"type": "string", "enum": ["respond-async"]},
                             OpenApiParameter.HEADER, required=True, response=[202],
                             description="The Prefer header's preference that was honoured."),
        ]
    headers += [
        OpenApiParameter("Deprecation", {"type": "string", "pattern": r"^@-?\d+$"}, OpenApiParameter.HEADER,
                         response=[200], description="The model is deprecated (RFC 9745): @<unix seconds> of its "
                                                     "deprecation. Absent for active models."),
        OpenApiParameter("Sunset", {"type": "string"}, OpenApiParameter.HEADER, response=[200],
                         description="When a deprecated model stops being served (RFC 8594), an HTTP-date."),
        OpenApiParameter("Link", {"type": "string"}, OpenApiParameter.HEADER, response=[200],
                         description='<url>; rel="deprecation": a page about the deprecation (RFC 9745).'),
    ] if statuses != _MODEL_LIST_STATUSES else []
    if images:
        headers += [
            OpenApiParameter("x-model-remapped", {"type": "string", "pattern": "^.+ -> .+$"},
                             OpenApiParameter.HEADER, response=[200],
                             description="'<requested> -> <served>': the requested model is retired and your "
                                         "organization has remapping on, so its replacement served the request "
                                         "(at the replacement's price; usage.model_used names it)."),
            OpenApiParameter("x-provider", {"type": "string"}, OpenApiParameter.HEADER, response=[200],
                             description="The upstream provider that produced the images."),
            OpenApiParameter("idempotent-replayed", {"type": "string", "enum": ["true"]}, OpenApiParameter.HEADER,
                             response=[s for s in authenticated if s < 500 and s not in (409, 429)],
                             description="Present when this is the stored response of an earlier request with "
                                         "the same Idempotency-Key."),
            OpenApiParameter(
                "Idempotency-Key",
                {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"},
                OpenApiParameter.HEADER, required=False,
                description="Send the same key (1-255 printable ASCII characters, e.g. a UUID) when retrying: the "
                            "first response is stored for 24 hours and replayed, so a retry never generates or "
                            "charges twice. The same key with a different request answers 409.",
            ),
        ]
    return headers


_ASYNC_DESCRIPTION = (
    "`Prefer: respond-async` was sent: the request runs as a job (GET /v1/images/jobs/{id}, the `Location` "
    "header). The job answers with the same `data` and `usage` when it succeeds.")


def _responses(ok, statuses: list[int], ok_description: str, ok_examples=(), error_examples=None,
               stream=None, accepted: bool = False) -> dict:
    responses = {200: OpenApiResponse(ok, description=ok_description, examples=list(ok_examples))}
    if stream is not None:  # `stream: true`: the same 200 as Server-Sent Events, each `data:` one of the events
        responses = {(200, "application/json"): responses[200],
                     (200, streaming.CONTENT_TYPE.split(";")[0]): OpenApiResponse(stream)}
    if accepted:  # `Prefer: respond-async`: 202 and the job
        responses[(202, "application/json") if stream is not None else 202] = OpenApiResponse(
            ImageJobSerializer, description=_ASYNC_DESCRIPTION)
    for status in statuses:
        if status != 200:
            responses[status] = OpenApiResponse(ErrorSerializer, description=_ERROR_DESCRIPTIONS[status],
                                                examples=(error_examples or {}).get(status, []))
    return responses


# --- Examples (true to the code: the default model, its sizes and price) --------------------------------------------

def _example_price_usd(model: str, size: str, quality: str) -> float:
    from billing.price_list import PRICE_LIST

    rows = [row for row in PRICE_LIST if row[:3] == (model, size, quality)]
    return round(max(rows, key=lambda row: row[4])[3] / 1_000_000, 6) if rows else 0.0


def _example_request() -> dict:
    spec = catalog.MODELS[catalog.DEFAULT_MODEL]
    return {"model": spec.id, "prompt": "A lighthouse in a storm", "size": spec.sizes[0],
            "response_format": "b64_json"}


def _example_images(endpoint: str) -> OpenApiExample:
    spec = catalog.MODELS[catalog.DEFAULT_MODEL]
    size = spec.sizes[0]
    item = {"url": f"{EXAMPLE_BASE_URL}/images/eyJuIjoiaW1hZ2VzL2FjbWUvcmVxXzEyMyJ9:1uYm0c:Q2xhc3NpYw.png"}
    if endpoint != "variations":
        item["revised_prompt"] = "A lighthouse in a storm"
    return OpenApiExample("url", response_only=True, status_codes=[200], value={
        "created": 1764028800, "data": [item],
        "usage": {"input_tokens": 0, "input_tokens_details": {"text_tokens": 0, "image_tokens": 0},
                  "output_tokens": 0, "total_tokens": 0,
                  "cost": _example_price_usd(spec.id, size, spec.default_quality), "latency_ms": 41,
                  "image_size": size, "model_used": spec.id},
    })


def _example_error(name: str, status: int, message: str, *, type_: str = "invalid_request_error", param=None,
                   code=None) -> OpenApiExample:
    return OpenApiExample(name, response_only=True, status_codes=[status],
                          value={"error": {"message": message, "type": type_, "param": param, "code": code}})


def _image_error_examples() -> dict:
    spec = catalog.MODELS[catalog.DEFAULT_MODEL]
    return {
        400: [_example_error(
            "invalid_size", 400,
            f"Invalid 'size': '640x480' is not supported by model '{spec.id}'. The 'size' parameter must be one of: "
            f"{', '.join(spec.sizes)}.", param="size", code="invalid_size")],
        401: [_example_error("invalid_api_key", 401, "Incorrect API key provided: ig_Abc****wxyz. The key is unknown "
                                                     "or has been revoked. You can find and create API keys on your "
                                                     "dashboard's API keys page.", code="invalid_api_key")],
        404: [_example_error("model_not_found", 404, "The model 'dall-e-9' does not exist or you do not have access "
                                                     "to it. GET /v1/models lists the models you can use.",
                             param="model", code="model_not_found")],
        429: [_example_error("rate_limit_exceeded", 429, "Rate limit reached for requests on API key ig_Abc12345…: "
                                                         "limit 300 / min, used 300. Please try again in 200ms.",
                             type_="requests", code="rate_limit_exceeded")],
    }


# --- Code samples (rendered by /docs/api/, also useful in any OpenAPI viewer) -------------------------------------

def _samples(endpoint: str) -> list[dict]:
    base = EXAMPLE_BASE_URL
    if endpoint == "generations":
        curl = (f"curl {base}/v1/images/generations \\\n"
                '  -H "Authorization: Bearer $IMAGEGATE_API_KEY" \\\n'
                '  -H "Content-Type: application/json" \\\n'
                f"  -d '{{\"model\": \"{catalog.DEFAULT_MODEL}\", \"prompt\": \"A lighthouse in a storm\", "
                '"size": "1024x1024", "n": 1}\'')
        python = ("import base64, os\nfrom openai import OpenAI\n\n"
                  f'client = OpenAI(base_url="{base}/v1", api_key=os.environ["IMAGEGATE_API_KEY"])\n'
                  f'result = client.images.generate(model="{catalog.DEFAULT_MODEL}", '
                  'prompt="A lighthouse in a storm",\n'
                  '                                size="1024x1024", response_format="b64_json")\n'
                  'open("lighthouse.png", "wb").write(base64.b64decode(result.data[0].b64_json))\n'
                  'print(result.usage.model_extra["cost"])  # USD; also latency_ms, image_size, model_used\n'
                  "print(result.usage.total_tokens)  # OpenAI's token counts (the upstream's, else 0)")
    elif endpoint == "edits":
        curl = (f"curl {base}/v1/images/edits \\\n"
                '  -H "Authorization: Bearer $IMAGEGATE_API_KEY" \\\n'
                '  -F image=@photo.png -F mask=@mask.png \\\n'
                f'  -F model={catalog.DEFAULT_MODEL} -F prompt="Add a red balloon in the sky" -F size=512x512')
        python = ("import os\nfrom openai import OpenAI\n\n"
                  f'client = OpenAI(base_url="{base}/v1", api_key=os.environ["IMAGEGATE_API_KEY"])\n'
                  f'result = client.images.edit(model="{catalog.DEFAULT_MODEL}", image=open("photo.png", "rb"),\n'
                  '                            mask=open("mask.png", "rb"), prompt="Add a red balloon in the sky",\n'
                  '                            size="512x512")\n'
                  "print(result.data[0].url)  # signed, valid for 60 minutes")
    else:
        curl = (f"curl {base}/v1/images/variations \\\n"
                '  -H "Authorization: Bearer $IMAGEGATE_API_KEY" \\\n'
                f'  -F image=@photo.png -F model={catalog.DEFAULT_MODEL} -F n=2 -F size=256x256')
        python = ("import os\nfrom openai import OpenAI\n\n"
                  f'client = OpenAI(base_url="{base}/v1", api_key=os.environ["IMAGEGATE_API_KEY"])\n'
                  f'result = client.images.create_variation(model="{catalog.DEFAULT_MODEL}", '
                  'image=open("photo.png", "rb"),\n'
                  '                                         n=2, size="256x256")\n'
                  "for image in result.data:\n    print(image.url)")
    return [{"lang": "Shell", "label": "curl", "source": curl},
            {"lang": "Python", "label": "Python (OpenAI SDK)", "source": python}]


def _model_samples(detail: bool) -> list[dict]:
    base = EXAMPLE_BASE_URL
    path = f"/v1/models/{catalog.DEFAULT_MODEL}" if detail else "/v1/models"
    call = f'client.models.retrieve("{catalog.DEFAULT_MODEL}")' if detail else "[m.id for m in client.models.list()]"
    return [
        {"lang": "Shell", "label": "curl",
         "source": f'curl {base}{path} \\\n  -H "Authorization: Bearer $IMAGEGATE_API_KEY"'},
        {"lang": "Python", "label": "Python (OpenAI SDK)",
         "source": "import os\nfrom openai import OpenAI\n\n"
                   f'client = OpenAI(base_url="{base}/v1", api_key=os.environ["IMAGEGATE_API_KEY"])\n'
                   f"print({call})"},
    ]


# --- Authentication, hooks, annotation ----------------------------------------------------------------------------

class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = SECURITY_SCHEME

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "ig_<8 characters>_<43 characters>",
            "description": "An API key from the dashboard's API keys page: `Authorization: Bearer ig_...`.",
        }


OPERATION_IDS = {
    ("/v1/images/generations", "post"): "createImage",
    ("/v1/images/edits", "post"): "createImageEdit",
    ("/v1/images/variations", "post"): "createImageVariation",
    ("/v1/images/quote", "post"): "quoteImage",
    ("/v1/images/jobs", "get"): "listImageJobs",
    ("/v1/images/jobs/{job_id}", "get"): "retrieveImageJob",
    ("/v1/images/jobs/{job_id}/cancel", "post"): "cancelImageJob",
    ("/v1/webhook_endpoints", "get"): "listWebhookEndpoints",
    ("/v1/webhook_endpoints", "post"): "createWebhookEndpoint",
    ("/v1/webhook_endpoints/{endpoint_id}", "get"): "retrieveWebhookEndpoint",
    ("/v1/webhook_endpoints/{endpoint_id}", "delete"): "deleteWebhookEndpoint",
    ("/v1/webhook_endpoints/{endpoint_id}/rotate_secret", "post"): "rotateWebhookEndpointSecret",
    ("/v1/models", "get"): "listModels",
    ("/v1/models/{model_id}", "get"): "retrieveModel",
}


def only_v1(endpoints):
    """PREPROCESSING_HOOKS: document /v1 only (never the dashboard, admin, accounts or image files)."""
    return [
        (path, path_regex, method, callback) for path, path_regex, method, callback in endpoints
        if path.startswith("/v1/") and not path.startswith("/v1/openapi")
    ]


def _walk(node):
    if isinstance(node, dict):
        node.pop("x-spec-enum-id", None)
        for value in node.values():
            _walk(value)
    elif isinstance(node, list):
        for value in node:
            _walk(value)


def postprocess(result, generator, request, public):
    """POSTPROCESSING_HOOKS: what serializers cannot say.

    * OpenAI's operation ids (set here: extend_schema on a view class warns about operation_id);
    * enums stay inline (each endpoint has its own allowed values) without drf-spectacular's bookkeeping key;
    * request bodies refuse unknown fields (validation answers 400 unknown_parameter);
    * an edit needs `image` or `image[]`;
    * the Error schema carries the table of error codes (`x-error-codes`);
    * a text/event-stream answer is described event by event, as Schemathesis reads a stream: each event an object
      {event, data}; `data` is a string holding the event as JSON, whose schema `x-contentSchema` names (OpenAPI
      3.1's contentMediaType/contentSchema are not allowed in this 3.0 document; tests/test_streaming.py checks the
      events with the SDK's own types);
    * the document carries the catalog (`x-imagegate-models`): which sizes, qualities, ... each model takes.
    """
    _walk(result)
    result["x-imagegate-models"] = model_table()
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if (path, method) in OPERATION_IDS:
                operation["operationId"] = OPERATION_IDS[path, method]
            for response in operation.get("responses", {}).values():
                _describe_events(response.get("content", {}))
    schemas = result.get("components", {}).get("schemas", {})
    for name in ("ImageGenerationRequest", "ImageEditRequest", "ImageVariationRequest"):
        if name in schemas:
            schemas[name]["additionalProperties"] = False
    if "ImageEditRequest" in schemas:
        schemas["ImageEditRequest"]["anyOf"] = [{"required": ["image"]}, {"required": ["image[]"]}]
    if "Error" in schemas:
        schemas["Error"]["x-error-codes"] = [  # generated from the one registry (generation/errors.py)
            {"status": row.status, "type": row.type, "code": row.code, "description": row.when}
            for row in errors.REGISTRY
        ]
    return result


def _describe_events(content: dict) -> None:
    stream = content.get(streaming.CONTENT_TYPE.split(";")[0])
    if stream is None or "x-contentSchema" in str(stream):
        return
    events = stream["schema"]
    stream["schema"] = {
        "type": "object", "required": ["event", "data"],
        "description": "One Server-Sent Event: `event:` names its type, `data:` is the event as JSON.",
        "properties": {
            "event": {"type": "string", "description": "The event's type (the same as `type` in its data)."},
            "data": {"type": "string", "description": "The event as JSON: the schema in x-contentSchema.",
                     "x-contentMediaType": "application/json", "x-contentSchema": events},
        },
    }


_FILE_ENCODING = {"contentType": "image/png, image/jpeg, image/webp"}


def annotate() -> None:
    """Attach the schema to the /v1 view classes (once; urls import this module)."""
    if getattr(images.ImageGenerationsView, "_openapi_annotated", False):
        return
    extend_schema(
        tags=["Images"], summary="Create images",
        description="Generate images from a text prompt with any model of the catalog that can generate. "
                    "Same request and response as OpenAI's `POST /v1/images/generations`, plus `usage`.",
        request={"application/json": ImageGenerationSerializer},
        responses=_responses(ImagesResponseSerializer, _IMAGE_STATUSES,
                             "The images (JSON); with `stream: true`, Server-Sent Events (`event: <type>`, `data: "
                             "<one event as JSON>`).", [_example_images("generations")], _image_error_examples(),
                             stream=_stream_events("image_generation", "ImageGen"), accepted=True),
        examples=[OpenApiExample("base64", summary=f"{catalog.DEFAULT_MODEL}, base64", value=_example_request(),
                                 request_only=True)],
        parameters=_headers([202, *_IMAGE_STATUSES], images=True),
        extensions={"x-codeSamples": _samples("generations")},
    )(images.ImageGenerationsView)
    extend_schema(
        tags=["Images"], summary="Edit images",
        description="Edit or extend one or more input images as the prompt says; an optional mask limits the edit "
                    "to its transparent area. multipart/form-data, as OpenAI's `POST /v1/images/edits`.",
        request={"multipart/form-data": OpenApiRequest(
            ImageEditSerializer, encoding={"image": _FILE_ENCODING, "image[]": _FILE_ENCODING,
                                           "mask": {"contentType": "image/png"}})},
        responses=_responses(ImagesResponseSerializer, _IMAGE_STATUSES,
                             "The edited images (JSON); with `stream: true`, Server-Sent Events (`event: <type>`, "
                             "`data: <one event as JSON>`).", [_example_images("edits")], _image_error_examples(),
                             stream=_stream_events("image_edit", "ImageEdit"), accepted=True),
        parameters=_headers([202, *_IMAGE_STATUSES], images=True),
        extensions={"x-codeSamples": _samples("edits")},
    )(images.ImageEditsView)
    extend_schema(
        tags=["Images"], summary="Create image variations",
        description="Variations of one input image. multipart/form-data, as OpenAI's `POST /v1/images/variations`. "
                    "Variations carry no revised_prompt.",
        request={"multipart/form-data": OpenApiRequest(ImageVariationSerializer, encoding={"image": _FILE_ENCODING})},
        responses=_responses(ImagesResponseSerializer, _IMAGE_STATUSES, "The variations.",
                             [_example_images("variations")], _image_error_examples()),
        parameters=_headers(_IMAGE_STATUSES, images=True),
        extensions={"x-codeSamples": _samples("variations")},
    )(images.ImageVariationsView)
    extend_schema(
        tags=["Images"], summary="Quote a request",
        description="What a generation (JSON body) or an edit (multipart body) would cost, validated exactly as the "
                    "request itself would be, without generating or charging: no upstream is called and no rate "
                    "limit or spend is used. For \"auto\" sizes or qualities the answer has the range of outcomes "
                    "and `cost` is the dearest, which is what `max_cost` is held to. Imagegate extension.",
        request={"application/json": ImageGenerationSerializer,
                 "multipart/form-data": OpenApiRequest(
                     ImageEditSerializer, encoding={"image": _FILE_ENCODING, "image[]": _FILE_ENCODING,
                                                    "mask": {"contentType": "image/png"}})},
        responses=_responses(QuoteSerializer, _QUOTE_STATUSES, "The quote."),
        parameters=_headers(_QUOTE_STATUSES, images=False),
    )(quote_api.QuoteView)
    extend_schema(
        tags=["Models"], summary="List models",
        description="The models enabled on this server (those at least one configured provider serves), with "
                    "what each accepts.",
        responses=_responses(ModelListSerializer, _MODEL_LIST_STATUSES, "The models."),
        parameters=_headers(_MODEL_LIST_STATUSES, images=False),
        extensions={"x-codeSamples": _model_samples(detail=False)},
    )(model_list.ModelListView)
    extend_schema(
        tags=["Models"], summary="Retrieve a model",
        description="One model object. Model ids may contain '/' (e.g. `vendor/model`); send them as they are.",
        responses=_responses(ModelSerializer, _MODEL_DETAIL_STATUSES, "The model."),
        parameters=[
            OpenApiParameter("model_id", {"type": "string", "minLength": 1}, OpenApiParameter.PATH,
                             required=True, description="The model id, e.g. local-preview. It may contain '/'.",
                             examples=[OpenApiExample(catalog.DEFAULT_MODEL, value=catalog.DEFAULT_MODEL)]),
            *_headers(_MODEL_DETAIL_STATUSES, images=False),
        ],
        extensions={"x-codeSamples": _model_samples(detail=True)},
    )(model_list.ModelDetailView)
    job_id = OpenApiParameter("job_id", {"type": "string", "minLength": 1, "maxLength": 40}, OpenApiParameter.PATH,
                              required=True, description="The job's id (imgjob_...).")
    extend_schema(
        tags=["Images"], summary="List image jobs",
        description="The organization's async image jobs, newest first, as OpenAI pages its lists: pass `last_id` "
                    "back as `after` while `has_more`. Jobs are kept until their results' image URLs expire.",
        responses=_responses(ImageJobListSerializer, _JOB_STATUSES, "A page of jobs."),
        parameters=[
            OpenApiParameter("after", {"type": "string", "minLength": 1, "maxLength": 40}, OpenApiParameter.QUERY,
                             description="A job id: the jobs created before it."),
            OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": jobs.job_service.LIST_MAX},
                             OpenApiParameter.QUERY, description="Jobs per page, 1-100 (default 20)."),
            *_headers(_JOB_STATUSES, images=False),
        ],
    )(jobs.ImageJobListView)
    extend_schema(
        tags=["Images"], summary="Retrieve an image job",
        description="One async image job (`Prefer: respond-async` on generations or edits); poll it until its "
                    "status is succeeded, failed or cancelled.",
        responses=_responses(ImageJobSerializer, _JOB_STATUSES, "The job."),
        parameters=[job_id, *_headers(_JOB_STATUSES, images=False)],
    )(jobs.ImageJobDetailView)
    extend_schema(
        tags=["Images"], summary="Cancel an image job",
        description="Cancel a queued job: it never runs and costs nothing. A running or finished job answers 409 "
                    "job_not_cancellable (its upstream call may already be paid for).",
        request=None,
        responses=_responses(ImageJobSerializer, _JOB_CANCEL_STATUSES, "The cancelled job."),
        parameters=[job_id, *_headers(_JOB_CANCEL_STATUSES, images=False)],
    )(jobs.ImageJobCancelView)
    _annotate_webhooks()
    images.ImageGenerationsView._openapi_annotated = True


def _annotate_webhooks() -> None:
    """The webhook endpoint views: per method (two of them serve two methods each)."""
    endpoint_id = OpenApiParameter("endpoint_id", {"type": "string", "minLength": 1, "maxLength": 40},
                                   OpenApiParameter.PATH, required=True, description="The endpoint's id (we_...).")
    listing, detail, rotate = (webhooks.WebhookEndpointListView, webhooks.WebhookEndpointDetailView,
                               webhooks.WebhookEndpointRotateView)
    tags = ["Webhooks"]
    listing.get = extend_schema(
        tags=tags, summary="List webhook endpoints", description="The organization's webhook endpoints.",
        responses=_responses(WebhookEndpointListSerializer, _JOB_STATUSES, "The endpoints."),
        parameters=_headers(_JOB_STATUSES, images=False))(listing.get)
    listing.post = extend_schema(
        tags=tags, summary="Create a webhook endpoint",
        description="Register an https URL for job events (image.job.succeeded, image.job.failed, "
                    "image.job.cancelled). The answer carries the signing `secret`, shown only this once.",
        request={"application/json": WebhookEndpointRequestSerializer},
        responses=_responses(WebhookEndpointSerializer, _JOB_STATUSES, "The endpoint, with its secret."),
        parameters=_headers(_JOB_STATUSES, images=False))(listing.post)
    detail.get = extend_schema(
        tags=tags, summary="Retrieve a webhook endpoint", description="One endpoint (without its secret).",
        responses=_responses(WebhookEndpointSerializer, _JOB_STATUSES, "The endpoint."),
        parameters=[endpoint_id, *_headers(_JOB_STATUSES, images=False)])(detail.get)
    detail.delete = extend_schema(
        tags=tags, summary="Delete a webhook endpoint", description="No more events go to it.",
        responses=_responses(WebhookEndpointDeletedSerializer, _JOB_STATUSES, "Deleted."),
        parameters=[endpoint_id, *_headers(_JOB_STATUSES, images=False)])(detail.delete)
    rotate.post = extend_schema(
        tags=tags, summary="Rotate a webhook endpoint's secret",
        description="A new signing secret (shown this once); the previous one keeps signing too (a second v1= "
                    "in Imagegate-Signature) for 24 hours.", request=None,
        responses=_responses(WebhookEndpointSerializer, _JOB_STATUSES, "The endpoint, with its new secret."),
        parameters=[endpoint_id, *_headers(_JOB_STATUSES, images=False)])(rotate.post)


annotate()
