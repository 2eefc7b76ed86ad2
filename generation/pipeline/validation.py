"""Validation of image requests against the model catalog, with OpenAI's error semantics.

One table says which fields each endpoint takes; the model's catalog entry says which values. Every optional field
may be omitted or sent as JSON null (the model's default applies); multipart forms send scalars as strings, which
are converted; unknown fields are refused with `unknown_parameter`; every message names the allowed values.
"""
import re
from collections.abc import Callable
from dataclasses import dataclass

from accounts.selectors import key_allows_model
from generation import catalog
from generation.errors import InvalidRequest, ModelNotFound, PermissionDenied
from generation.pipeline import input_images as images
from generation.pipeline import quote
from generation.providers.base import ImageRequest, InputImage

# Fields per endpoint: OpenAI's own, then our documented extras (`provider`, `image` URL, `seed`).
FIELDS = {
    "generations": {
        "prompt", "model", "n", "size", "quality", "style", "response_format", "user",
        "background", "moderation", "output_format", "output_compression", "stream", "partial_images",
        "provider", "image", "seed", "max_cost",
    },
    "edits": {
        "prompt", "model", "n", "size", "quality", "response_format", "user",
        "background", "moderation", "output_format", "output_compression", "input_fidelity", "stream",
        "partial_images", "provider", "seed", "max_cost",
    },
    "variations": {"model", "n", "size", "response_format", "user", "provider", "seed", "max_cost"},
}
FILE_FIELDS = {"generations": set(), "edits": {"image", "image[]", "mask"}, "variations": {"image"}}
INT_FIELDS = {"n", "output_compression", "seed", "partial_images"}
MAX_PARTIAL_IMAGES = 3  # OpenAI's limit on `partial_images`
# How a multipart form says true/false (OpenAI's SDKs send "true"/"false"); generation/api/streaming.py reads the same.
FORM_TRUE, FORM_FALSE = ("true", "True", "1"), ("false", "False", "0")
MODE = {"generations": "generate", "edits": "edit", "variations": "variation"}
_INT_STRING = re.compile(r"^[+-]?\d{1,10}$")
MAX_USER_CHARS = 256


@dataclass(frozen=True)
class ImageCall:
    """A validated request: what the provider gets, plus what only the gateway needs."""

    endpoint: str
    spec: catalog.ModelSpec
    request: ImageRequest
    response_format: str  # "url" or "b64_json": how we deliver (gpt-image models: always b64_json)
    provider: str | None
    image_url: str | None = None  # generations' `image`: fetched (safely) by the service
    stream: bool = False  # answered as Server-Sent Events (generation/api/streaming.py); images always base64
    max_cost_micros: int | None = None  # the request's price ceiling (`max_cost`, USD → micro-USD): pipeline/quote.py


def _type_name(value) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__)


class _Reader:
    """Reads typed fields from a JSON object or a multipart form (where every scalar arrives as a string)."""

    def __init__(self, data: dict, *, form: bool):
        self.data = data
        self.form = form

    def str(self, name: str, *, required: bool = False) -> str | None:
        value = self.data.get(name)
        if value is None:
            if required:
                raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name,
                                     code="missing_required_parameter")
            return None
        if not isinstance(value, str):
            raise InvalidRequest(f"Invalid type for '{name}': expected a string, but got {_type_name(value)} instead.",
                                 param=name, code="invalid_type")
        if "\x00" in value:
            raise InvalidRequest(f"Invalid '{name}': NUL characters are not allowed.", param=name,
                                 code="invalid_parameter")
        return value

    def int(self, name: str) -> int | None:
        value = self.data.get(name)
        if value is None:
            return None
        if self.form and isinstance(value, str):
            if not _INT_STRING.match(value.strip()):
                raise InvalidRequest(f"Invalid type for '{name}': expected an integer, but got '{value[:40]}' instead.",
                                     param=name, code="invalid_type")
            return int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"Invalid type for '{name}': expected an integer, but got {_type_name(value)} "
                                 "instead.", param=name, code="invalid_type")
        return value

    def bool(self, name: str) -> bool | None:
        value = self.data.get(name)
        if value is None:
            return None
        if self.form and isinstance(value, str) and value in FORM_TRUE + FORM_FALSE:
            return value in FORM_TRUE
        if not isinstance(value, bool):
            shown = f"'{value[:40]}'" if isinstance(value, str) else _type_name(value)
            raise InvalidRequest(f"Invalid type for '{name}': expected a boolean, but got {shown} instead.",
                                 param=name, code="invalid_type")
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default, spec: catalog.ModelSpec, *, owner_hint: str = ""):
        value = self.str(name)
        if value is None:
            return default
        if not allowed:
            hint = owner_hint() if callable(owner_hint) else owner_hint
            raise InvalidRequest(f"The '{name}' parameter is not supported by model '{spec.id}'.{hint}",
                                 param=name, code="invalid_parameter")
        if value not in allowed:
            raise InvalidRequest(
                f"Invalid '{name}': '{value[:60]}' is not supported by model '{spec.id}'. "
                f"The '{name}' parameter must be one of: {', '.join(allowed)}.",
                param=name, code="invalid_size" if name == "size" else "invalid_parameter",
            )
        return value


def _size(r: _Reader, spec: catalog.ModelSpec) -> str:
    """The size asked for: one of the model's listed sizes, or (gpt-image-2) any WIDTHxHEIGHT within its rules; a
    refusal names the rule the size breaks."""
    if spec.free_sizes is None:
        return r.choice("size", spec.sizes, spec.default_size, spec)
    size = r.str("size")
    if size is None:
        return spec.default_size
    problem = spec.size_problem(size)
    if problem is not None:
        raise InvalidRequest(f"Invalid 'size': '{size[:60]}' is not supported by model '{spec.id}': {problem}. "
                             f"Model '{spec.id}' takes 'auto' or {spec.free_sizes.describe()}.", param="size",
                             code="invalid_size")
    return size


def _models_with(attr: str) -> str:
    names = [m.id for m in catalog.MODELS.values() if getattr(m, attr)]
    return f" It is supported by: {', '.join(names)}." if names else ""


def validate(
    endpoint: str,
    data,
    *,
    files: dict[str, list[InputImage]] | None = None,
    form: bool = False,
    is_available: Callable[[catalog.ModelSpec], bool] = lambda spec: True,
    api_key=None,
) -> ImageCall:
    """Validate one request to /v1/images/{endpoint}. `files` maps multipart file fields to inspected images."""
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    files = files or {}
    allowed = FIELDS[endpoint]
    unknown = sorted((set(data) - allowed) | (set(files) - FILE_FIELDS[endpoint]))
    if unknown:
        raise InvalidRequest(f"Unknown parameter: '{unknown[0]}'.", param=unknown[0], code="unknown_parameter")
    r = _Reader(data, form=form)

    model_id = r.str("model") or catalog.DEFAULT_MODEL
    spec = catalog.get_model(model_id)
    if spec is None or not is_available(spec):
        raise ModelNotFound(model_id)
    if not key_allows_model(api_key, spec.id):
        raise PermissionDenied(
            f"This API key may not use model '{spec.id}'. It may use: {', '.join(api_key.allowed_models)}.",
            param="model", code="model_not_allowed",
        )
    mode = MODE[endpoint]
    if not spec.supports(mode):
        able = [m.id for m in catalog.MODELS.values() if m.supports(mode) and is_available(m)]
        raise InvalidRequest(f"Model '{spec.id}' does not support image {endpoint}. Models that do: {', '.join(able)}.",
                             param="model", code="invalid_parameter")

    prompt = ""
    if endpoint != "variations":
        prompt = r.str("prompt", required=True)
        if not prompt.strip():
            raise InvalidRequest("Invalid 'prompt': the prompt must not be empty.", param="prompt",
                                 code="invalid_parameter")
        if len(prompt) > spec.max_prompt_chars:
            raise InvalidRequest(
                f"Invalid 'prompt': string too long. Expected a string with maximum length {spec.max_prompt_chars} "
                f"for model '{spec.id}', but got a string with length {len(prompt)} instead.",
                param="prompt", code="string_above_max_length",
            )

    n = r.int("n")
    n = 1 if n is None else n
    if not 1 <= n <= spec.max_n:
        raise InvalidRequest(f"Invalid 'n': {n}. Model '{spec.id}' accepts n from 1 to {spec.max_n}.", param="n",
                             code="invalid_parameter")

    size = _size(r, spec)
    quality = (r.choice("quality", spec.qualities, spec.default_quality, spec) if "quality" in allowed
               else spec.default_quality)
    style = r.choice("style", spec.styles, spec.default_style, spec, owner_hint=lambda: _models_with("styles")) \
        if "style" in allowed else None

    stream = bool(r.bool("stream")) if "stream" in allowed else False
    partial_images = r.int("partial_images") if "partial_images" in allowed else None
    if partial_images is not None and not 0 <= partial_images <= MAX_PARTIAL_IMAGES:
        raise InvalidRequest(f"Invalid 'partial_images': {partial_images}. It must be from 0 to {MAX_PARTIAL_IMAGES}.",
                             param="partial_images", code="invalid_parameter")

    if spec.response_formats:
        response_format = r.choice("response_format", spec.response_formats, spec.default_response_format, spec)
        if stream and data.get("response_format") is not None and response_format != "b64_json":
            raise InvalidRequest("Invalid 'response_format': a stream carries its images as b64_json; omit "
                                 "response_format or send b64_json.", param="response_format",
                                 code="invalid_parameter")
        response_format = "b64_json" if stream else response_format
    else:  # gpt-image models always answer base64 and refuse the field, as OpenAI does
        if data.get("response_format") is not None:
            raise InvalidRequest("Unknown parameter: 'response_format'.", param="response_format",
                                 code="unknown_parameter")
        response_format = "b64_json"

    options = {}
    if spec.output_formats:
        options["background"] = r.choice("background", spec.backgrounds, "auto", spec)
        options["moderation"] = (r.choice("moderation", spec.moderations, "auto", spec) if "moderation" in allowed
                                 else "auto")
        options["output_format"] = r.choice("output_format", spec.output_formats, "png", spec)
        compression = r.int("output_compression")
        if compression is not None:
            if not 0 <= compression <= 100:
                raise InvalidRequest(f"Invalid 'output_compression': {compression}. It must be from 0 to 100.",
                                     param="output_compression", code="invalid_parameter")
            if options["output_format"] == "png" and compression < 100:
                raise InvalidRequest("Invalid 'output_compression': compression below 100 needs output_format "
                                     "'jpeg' or 'webp'.", param="output_compression", code="invalid_parameter")
        options["output_compression"] = 100 if compression is None else compression
        if endpoint == "edits":
            fidelity = r.choice("input_fidelity", spec.input_fidelities, None, spec,
                                owner_hint=lambda: _models_with("input_fidelities"))
            if fidelity is not None:
                options["input_fidelity"] = fidelity
        if options["background"] == "transparent" and options["output_format"] == "jpeg":
            raise InvalidRequest("Invalid 'background': a transparent background needs output_format 'png' or "
                                 "'webp'.", param="background", code="invalid_parameter")
    else:
        for name in ("background", "moderation", "output_format", "output_compression", "input_fidelity"):
            if name in allowed and data.get(name) is not None:
                raise InvalidRequest(f"The '{name}' parameter is not supported by model '{spec.id}'."
                                     f"{_models_with('output_formats')}", param=name, code="invalid_parameter")

    user = r.str("user")
    if user is not None and len(user) > MAX_USER_CHARS:
        raise InvalidRequest(f"Invalid 'user': at most {MAX_USER_CHARS} characters.", param="user",
                             code="string_above_max_length")

    provider = r.str("provider")
    if provider is not None and provider not in spec.providers:
        raise InvalidRequest(
            f"Invalid 'provider': '{provider[:60]}' does not serve model '{spec.id}'. "
            f"The 'provider' parameter must be one of: {', '.join(spec.providers)}.",
            param="provider", code="invalid_parameter",
        )

    seed = r.int("seed")
    if seed is not None and not 0 <= seed < 2**32:
        raise InvalidRequest("Invalid 'seed': expected an integer from 0 to 4294967295.", param="seed",
                             code="invalid_parameter")

    image_url = None
    input_images: list[InputImage] = []
    mask = None
    if endpoint == "generations":
        image_url = r.str("image")
        if image_url is not None:
            if not spec.supports("image_input"):
                raise InvalidRequest(f"The 'image' parameter is not supported by model '{spec.id}'. "
                                     "Use a model that can modify an input image, such as dall-e-2 or gpt-image-1.",
                                     param="image", code="invalid_parameter")
            if not image_url.strip():
                raise InvalidRequest("Invalid 'image': expected the URL of an input image.", param="image",
                                     code="invalid_parameter")
            mode = "edit"
    else:
        input_images = [*files.get("image", []), *files.get("image[]", [])]
        param = "image[]" if files.get("image[]") and not files.get("image") else "image"
        images.check_inputs(input_images, spec, param=param)
        if endpoint == "variations" and len(input_images) > 1:
            raise InvalidRequest("Invalid 'image': variations take exactly one image.", param="image",
                                 code="invalid_parameter")
        masks = files.get("mask", [])
        if len(masks) > 1:
            raise InvalidRequest("Invalid 'mask': send at most one mask.", param="mask", code="invalid_parameter")
        if masks:
            mask = masks[0]
            images.check_mask(mask, input_images[0], spec)

    request = ImageRequest(model=spec.id, prompt=prompt, n=n, size=size, quality=quality, style=style, seed=seed,
                           user=user, mode=mode, images=tuple(input_images), mask=mask, options=options,
                           partial_images=(partial_images or 0) if stream else None)
    return ImageCall(endpoint=endpoint, spec=spec, request=request, response_format=response_format,
                     provider=provider, image_url=image_url, stream=stream,
                     max_cost_micros=quote.parse_max_cost(data.get("max_cost")))
