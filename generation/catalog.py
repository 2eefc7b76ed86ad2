"""The model catalog: which models exist, who serves them, and what each accepts.

Validation, /v1/models, routing and pricing all read this one table. Upstream issues add their entries here (and
their prices in billing's price list). Facts for the OpenAI models are OpenAI's published limits.
"""
from dataclasses import dataclass, field

RESPONSE_FORMATS = ("url", "b64_json")
PNG = "image/png"
JPEG = "image/jpeg"
WEBP = "image/webp"


@dataclass(frozen=True)
class InputImageRules:
    """What an edit or variation accepts as input images (`image` / `image[]`, and `mask`)."""

    max_images: int = 1
    max_bytes: int = 4 * 1024 * 1024
    content_types: tuple[str, ...] = (PNG,)
    square: bool = True  # the input must be square (dall-e-2)

    def describe_types(self) -> str:
        return ", ".join(t.split("/")[1].upper() for t in self.content_types)


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
    native_max_n: int = 10  # what one upstream call returns at most; more is served by parallel calls
    max_prompt_chars: int = 4000
    # dall-e models answer with a URL or base64 as asked; gpt-image models always answer base64 and refuse the field.
    response_formats: tuple[str, ...] = RESPONSE_FORMATS
    default_response_format: str | None = "url"
    # gpt-image only.
    backgrounds: tuple[str, ...] = ()
    moderations: tuple[str, ...] = ()
    output_formats: tuple[str, ...] = ()
    output_compression: bool = False
    # "generate", "edit", "variation", "image_input" (the `image` URL on generations)
    capabilities: frozenset[str] = field(default_factory=lambda: frozenset({"generate"}))
    input_images: InputImageRules = InputImageRules()
    description: str = ""

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities


DALL_E_2 = ModelSpec(
    id="dall-e-2", owned_by="openai", created=1698798177, providers=("openai",),
    sizes=("256x256", "512x512", "1024x1024"), default_size="1024x1024",
    qualities=("standard",), default_quality="standard",
    max_n=10, native_max_n=10, max_prompt_chars=1000,
    capabilities=frozenset({"generate", "edit", "variation", "image_input"}),
    input_images=InputImageRules(max_images=1, max_bytes=4 * 1024 * 1024, content_types=(PNG,), square=True),
    description="OpenAI DALL·E 2: fast, cheap, edits and variations.",
)

DALL_E_3 = ModelSpec(
    id="dall-e-3", owned_by="openai", created=1698785189, providers=("openai",),
    sizes=("1024x1024", "1792x1024", "1024x1792"), default_size="1024x1024",
    qualities=("standard", "hd"), default_quality="standard",
    styles=("vivid", "natural"), default_style="vivid",
    max_n=10, native_max_n=1, max_prompt_chars=4000,
    capabilities=frozenset({"generate"}),
    description="OpenAI DALL·E 3: complex scenes, text in images. One image per upstream call; n > 1 runs calls in parallel.",
)

GPT_IMAGE_1 = ModelSpec(
    id="gpt-image-1", owned_by="openai", created=1745517030, providers=("openai",),
    sizes=("1024x1024", "1536x1024", "1024x1536", "auto"), default_size="auto",
    qualities=("low", "medium", "high", "auto"), default_quality="auto",
    max_n=10, native_max_n=10, max_prompt_chars=32000,
    response_formats=(), default_response_format=None,
    backgrounds=("transparent", "opaque", "auto"), moderations=("low", "auto"),
    output_formats=("png", "jpeg", "webp"), output_compression=True,
    capabilities=frozenset({"generate", "edit", "image_input"}),
    input_images=InputImageRules(max_images=16, max_bytes=50 * 1024 * 1024, content_types=(PNG, JPEG, WEBP),
                                 square=False),
    description="OpenAI gpt-image-1: instruction following, transparent backgrounds, always base64.",
)

LOCAL_PREVIEW = ModelSpec(
    id="local-preview", owned_by="imagegate", created=1764028800, providers=("local",),
    sizes=("256x256", "512x512", "1024x1024", "1024x1792", "1792x1024"), default_size="1024x1024",
    qualities=("standard",), default_quality="standard",
    max_n=10, native_max_n=10, max_prompt_chars=4000,
    capabilities=frozenset({"generate", "edit", "variation", "image_input"}),
    input_images=InputImageRules(max_images=4, max_bytes=10 * 1024 * 1024, content_types=(PNG, JPEG, WEBP),
                                 square=False),
    description="Built-in offline renderer: a deterministic picture drawn from the prompt and seed. "
                "Supports edits, variations and an input image, all offline.",
)

MODELS: dict[str, ModelSpec] = {spec.id: spec for spec in [LOCAL_PREVIEW, DALL_E_2, DALL_E_3, GPT_IMAGE_1]}

DEFAULT_MODEL = "local-preview"


def get_model(model_id: str) -> ModelSpec | None:
    return MODELS.get(model_id)


def available_models(enabled_providers: set[str]) -> list[ModelSpec]:
    """The models at least one enabled provider serves, in catalog order."""
    return [m for m in MODELS.values() if enabled_providers.intersection(m.providers)]
