"""The model catalog: which models exist, who serves them, and what each accepts.

Validation, /v1/models, routing and pricing all read this one table. Later upstreams add their entries here
(and their prices in billing's price table).
"""
from dataclasses import dataclass, field

RESPONSE_FORMATS = ("url", "b64_json")


@dataclass(frozen=True)
class ModelSpec:
    id: str
    owned_by: str
    created: int  # unix seconds, as OpenAI's model objects carry
    providers: tuple[str, ...]  # provider names that serve the model, in default preference order
    sizes: tuple[str, ...]
    default_size: str
    qualities: tuple[str, ...]
    default_quality: str
    styles: tuple[str, ...] = ()
    default_style: str | None = None
    max_n: int = 10  # what the API accepts
    native_max_n: int = 10  # what one upstream call can return; more is served by parallel calls
    max_prompt_chars: int = 4000
    response_formats: tuple[str, ...] = RESPONSE_FORMATS
    default_response_format: str = "url"
    capabilities: frozenset[str] = field(default_factory=lambda: frozenset({"generate"}))
    description: str = ""


MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in [
        ModelSpec(
            id="local-preview",
            owned_by="imagegate",
            created=1764028800,  # 2025-11-25
            providers=("local",),
            sizes=("256x256", "512x512", "1024x1024", "1024x1792", "1792x1024"),
            default_size="1024x1024",
            qualities=("standard",),
            default_quality="standard",
            max_n=10,
            native_max_n=10,
            max_prompt_chars=4000,
            capabilities=frozenset({"generate"}),
            description="Built-in offline renderer: a deterministic picture drawn from the prompt and seed.",
        ),
    ]
}

DEFAULT_MODEL = "local-preview"


def get_model(model_id: str) -> ModelSpec | None:
    return MODELS.get(model_id)


def available_models(enabled_providers: set[str]) -> list[ModelSpec]:
    """The models at least one enabled provider serves, in catalog order."""
    return [m for m in MODELS.values() if enabled_providers.intersection(m.providers)]
