"""Validation of a generation request against the model catalog, with OpenAI's error semantics.

Every optional field may be omitted or sent as JSON null (then the model's default applies); unknown fields are
refused with `unknown_parameter`; every message names the allowed values.
"""
from dataclasses import dataclass

from . import catalog
from .errors import InvalidRequest, ModelNotFound
from .providers.base import ImageRequest

# Fields OpenAI's Images API defines for generations, and our documented extras.
OPENAI_FIELDS = {"prompt", "model", "n", "size", "quality", "style", "response_format", "user"}
EXTRA_FIELDS = {"provider", "seed"}
KNOWN_FIELDS = OPENAI_FIELDS | EXTRA_FIELDS


@dataclass(frozen=True)
class GenerationCall:
    """A validated generation: the request for the provider plus what only the gateway needs."""

    spec: catalog.ModelSpec
    request: ImageRequest
    response_format: str
    provider: str | None


def _require_str(data: dict, name: str, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(
            f"Invalid type for '{name}': expected a string, but got {type(value).__name__} instead.",
            param=name, code="invalid_type",
        )
    return value


def _choice(data: dict, name: str, allowed: tuple[str, ...], default, model: str):
    value = _require_str(data, name)
    if value is None:
        return default
    if not allowed:
        raise InvalidRequest(f"The '{name}' parameter is not supported by model '{model}'.", param=name,
                             code="invalid_parameter")
    if value not in allowed:
        code = "invalid_size" if name == "size" else "invalid_parameter"
        raise InvalidRequest(
            f"Invalid '{name}': '{value}' is not supported by model '{model}'. "
            f"The '{name}' parameter must be one of: {', '.join(allowed)}.",
            param=name, code=code,
        )
    return value


def validate_generation(data) -> GenerationCall:
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")

    unknown = sorted(set(data) - KNOWN_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown parameter: '{unknown[0]}'.", param=unknown[0], code="unknown_parameter")

    model_id = _require_str(data, "model") or catalog.DEFAULT_MODEL
    spec = catalog.get_model(model_id)
    if spec is None:
        raise ModelNotFound(model_id)

    prompt = _require_str(data, "prompt", required=True)
    if not prompt.strip():
        raise InvalidRequest("Invalid 'prompt': the prompt must not be empty.", param="prompt", code="invalid_parameter")
    if len(prompt) > spec.max_prompt_chars:
        raise InvalidRequest(
            f"Invalid 'prompt': string too long. Expected a string with maximum length {spec.max_prompt_chars} "
            f"for model '{spec.id}', but got a string with length {len(prompt)} instead.",
            param="prompt", code="string_above_max_length",
        )

    n = data.get("n")
    if n is None:
        n = 1
    elif isinstance(n, bool) or not isinstance(n, int):
        raise InvalidRequest(
            f"Invalid type for 'n': expected an integer, but got {type(n).__name__} instead.", param="n",
            code="invalid_type",
        )
    if not 1 <= n <= spec.max_n:
        raise InvalidRequest(
            f"Invalid 'n': {n}. Model '{spec.id}' accepts n from 1 to {spec.max_n}.", param="n",
            code="invalid_parameter",
        )

    size = _choice(data, "size", spec.sizes, spec.default_size, spec.id)
    quality = _choice(data, "quality", spec.qualities, spec.default_quality, spec.id)
    style = _choice(data, "style", spec.styles, spec.default_style, spec.id)
    response_format = _choice(data, "response_format", spec.response_formats, spec.default_response_format, spec.id)
    user = _require_str(data, "user")

    provider = _require_str(data, "provider")
    if provider is not None and provider not in spec.providers:
        raise InvalidRequest(
            f"Invalid 'provider': '{provider}' does not serve model '{spec.id}'. "
            f"The 'provider' parameter must be one of: {', '.join(spec.providers)}.",
            param="provider", code="invalid_parameter",
        )

    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise InvalidRequest("Invalid 'seed': expected an integer from 0 to 4294967295.", param="seed",
                             code="invalid_parameter")

    request = ImageRequest(model=spec.id, prompt=prompt, n=n, size=size, quality=quality, style=style, seed=seed,
                           user=user)
    return GenerationCall(spec=spec, request=request, response_format=response_format, provider=provider)
