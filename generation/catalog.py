"""The model catalog: which models exist, who serves them, and what each accepts.

Validation, /v1/models, routing and pricing all read this one table. Upstream issues add their entries here (and
their prices in billing's price list). Facts for the OpenAI models are OpenAI's published limits.
"""
import dataclasses
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
    # Refused from the header, before decoding (a 47 KB PNG can declare 7000x7000): 4096x4096 unless a model says.
    max_pixels: int = 4096 * 4096
    content_types: tuple[str, ...] = (PNG,)
    square: bool = True  # the input must be square (dall-e-2)

    def describe_types(self) -> str:
        return ", ".join(t.split("/")[1].upper() for t in self.content_types)


@dataclass(frozen=True)
class FreeSizes:
    """Sizes a model takes beyond its listed ones: any `WIDTHxHEIGHT` that keeps these rules (gpt-image-2, from the
    SDK's `size` documentation and OpenAI's model page; the pixel floor is reported, docs/providers/openai.md).
    `check` names the first rule a size breaks, or None when the size is acceptable."""

    step: int = 16  # both sides multiples of this many pixels
    max_aspect: float = 3.0  # long side / short side at most this (between 1:3 and 3:1)
    max_side: int = 3840
    max_pixels: int = 3840 * 2160
    min_pixels: int = 655_360

    def describe(self) -> str:
        return (f"any WIDTHxHEIGHT with both sides multiples of {self.step}, an aspect ratio between "
                f"1:{self.max_aspect:g} and {self.max_aspect:g}:1, at most {self.max_side} pixels a side and "
                f"{self.max_pixels:,} pixels in all (3840x2160), at least {self.min_pixels:,} pixels")

    def check(self, size: str) -> str | None:
        width, sep, height = size.partition("x")
        if not sep or not width.isdigit() or not height.isdigit() or len(size) > 11:
            return "a size is WIDTHxHEIGHT in pixels, such as 1536x864"
        w, h = int(width), int(height)
        if w <= 0 or h <= 0 or w % self.step or h % self.step:
            return f"width and height must both be multiples of {self.step} (got {w}x{h})"
        if max(w, h) > self.max_aspect * min(w, h):
            return (f"the aspect ratio must be between 1:{self.max_aspect:g} and {self.max_aspect:g}:1 "
                    f"(got {w}x{h}, {max(w, h) / min(w, h):.2f}:1)")
        if max(w, h) > self.max_side or w * h > self.max_pixels:
            return (f"the size must be at most 3840x2160: at most {self.max_side} pixels a side and "
                    f"{self.max_pixels:,} pixels in all (got {w}x{h}, {w * h:,} pixels)")
        if w * h < self.min_pixels:
            return f"the size must have at least {self.min_pixels:,} pixels (got {w}x{h}, {w * h:,} pixels)"
        return None


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
    # Edits' `input_fidelity` values the model takes (empty: the field is refused for it).
    input_fidelities: tuple[str, ...] = ()
    # Sizes beyond `sizes` the model takes (gpt-image-2's free-form WIDTHxHEIGHT), or None.
    free_sizes: FreeSizes | None = None
    # An alias (chatgpt-image-latest): the dated model it pointed to when last checked; the upstream's answer names
    # the one that actually served each request (docs/providers/openai.md).
    alias_of: str | None = None
    # "generate", "edit", "variation", "image_input" (the `image` URL on generations)
    capabilities: frozenset[str] = field(default_factory=lambda: frozenset({"generate"}))
    input_images: InputImageRules = InputImageRules()
    description: str = ""

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    def size_problem(self, size: str) -> str | None:
        """Why `size` is not one this model makes (a sentence naming the rule), or None when it is."""
        if size in self.sizes:
            return None
        if self.free_sizes is not None:
            return self.free_sizes.check(size)
        return f"the 'size' parameter must be one of: {', '.join(self.sizes)}"

    @property
    def max_side(self) -> int:
        """The longest side, in pixels, of any image the model produces ("auto" counts as 1536)."""
        sides = [int(d) for size in self.sizes if "x" in size for d in size.split("x") if d.isdigit()]
        if self.free_sizes is not None:
            sides.append(self.free_sizes.max_side)
        return max(sides + [1536 if "auto" in self.sizes else 0]) or 1024


# OpenAI retired dall-e-2 and dall-e-3 on 2026-05-12 (docs/models.md): OpenAI now answers 404 model_not_found for
# them, and the router fails over to an OpenAI-compatible host that still serves them (OPENAI_COMPATIBLE_MODELS).
DALL_E_2 = ModelSpec(
    id="dall-e-2", owned_by="openai", created=1698798177, providers=("openai", "openai_compatible"),
    sizes=("256x256", "512x512", "1024x1024"), default_size="1024x1024",
    qualities=("standard",), default_quality="standard",
    max_n=10, native_max_n=10, max_prompt_chars=1000,
    capabilities=frozenset({"generate", "edit", "variation", "image_input"}),
    input_images=InputImageRules(max_images=1, max_bytes=4 * 1024 * 1024, content_types=(PNG,), square=True,
                                 max_pixels=2048 * 2048),
    description="OpenAI DALL·E 2: fast, cheap, edits and variations.",
)

DALL_E_3 = ModelSpec(
    id="dall-e-3", owned_by="openai", created=1698785189, providers=("openai", "openai_compatible"),
    sizes=("1024x1024", "1792x1024", "1024x1792"), default_size="1024x1024",
    qualities=("standard", "hd"), default_quality="standard",
    styles=("vivid", "natural"), default_style="vivid",
    max_n=10, native_max_n=1, max_prompt_chars=4000,
    capabilities=frozenset({"generate"}),
    description=("OpenAI DALL·E 3: complex scenes, text in images. One image per upstream call; n > 1 runs calls in "
                 "parallel."),
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
                                 square=False, max_pixels=6144 * 6144),
    description="OpenAI gpt-image-1: instruction following, transparent backgrounds, always base64.",
)

# OpenAI's current GPT image models (docs/providers/openai.md: the SDK's types, OpenAI's model pages). All take the
# same fields as gpt-image-1; they differ in sizes (gpt-image-2: free-form) and in `input_fidelity`.
GPT_IMAGE_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
_GPT_IMAGE_INPUT = InputImageRules(max_images=16, max_bytes=50 * 1024 * 1024, content_types=(PNG, JPEG, WEBP),
                                   square=False, max_pixels=6144 * 6144)


def _gpt_image(model_id: str, created: int, description: str, **changes) -> ModelSpec:
    return dataclasses.replace(GPT_IMAGE_1, id=model_id, created=created, description=description,
                               input_images=_GPT_IMAGE_INPUT, **changes)


GPT_IMAGE_1 = dataclasses.replace(GPT_IMAGE_1, input_fidelities=("high", "low"))
GPT_IMAGE_1_MINI = _gpt_image(
    "gpt-image-1-mini", 1759708800, "OpenAI gpt-image-1-mini: the cost-efficient GPT image model; edits take "
    "input_fidelity low only.", input_fidelities=("low",))
GPT_IMAGE_1_5 = _gpt_image(
    "gpt-image-1.5", 1765843200, "OpenAI gpt-image-1.5: faster, precise edits, dense text; input_fidelity high or "
    "low.", input_fidelities=("high", "low"))
# Listed sizes: the standard three, auto, and common large ones (any other WIDTHxHEIGHT within the rules is taken).
GPT_IMAGE_2_SIZES = GPT_IMAGE_SIZES + ("2048x2048", "2048x1152", "1152x2048", "2560x1440", "1440x2560", "3840x2160",
                                       "2160x3840")
GPT_IMAGE_2 = _gpt_image(
    "gpt-image-2", 1776729600, "OpenAI gpt-image-2 (snapshot gpt-image-2-2026-04-21): free-form sizes up to "
    "3840x2160 (both sides multiples of 16, aspect 1:3 to 3:1); no input_fidelity.",
    sizes=GPT_IMAGE_2_SIZES, free_sizes=FreeSizes(), input_fidelities=())
CHATGPT_IMAGE_LATEST = _gpt_image(
    "chatgpt-image-latest", 1765843200, "OpenAI's alias for the image model ChatGPT uses; the dated model that "
    "served each request is recorded. Standard sizes only (what every GPT image model takes).",
    alias_of="gpt-image-2-2026-04-21", input_fidelities=())

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

# --- Stability AI (v1 engines; v2beta Stable Image) -----------------------------------------------------------------
# OpenAI's `style` values map to Stability style presets; the presets themselves are accepted too.
STABILITY_STYLE_PRESETS = (
    "3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance", "fantasy-art",
    "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk", "origami", "photographic", "pixel-art",
    "tile-texture",
)
STABILITY_STYLES = ("vivid", "natural") + STABILITY_STYLE_PRESETS
SDXL_SIZES = ("1024x1024", "1152x896", "896x1152", "1216x832", "1344x768", "768x1344", "1536x640", "640x1536")
# v2beta models take an aspect ratio, not pixels: each size names the ratio it stands for (see ASPECT_RATIOS).
ASPECT_RATIOS = {
    "1024x1024": "1:1", "1344x768": "16:9", "768x1344": "9:16", "1216x832": "3:2", "832x1216": "2:3",
    "1280x1024": "5:4", "1024x1280": "4:5", "1568x672": "21:9", "672x1568": "9:21", "1024x768": "4:3",
    "768x1024": "3:4",
}
STABLE_IMAGE_SIZES = ("1024x1024", "1344x768", "768x1344", "1216x832", "832x1216", "1280x1024", "1024x1280",
                      "1568x672", "672x1568")
_V2_INPUT = InputImageRules(max_images=1, max_bytes=10 * 1024 * 1024, content_types=(PNG, JPEG, WEBP), square=False)


def _stability_v2(model_id: str, description: str, providers=("stability",)) -> ModelSpec:
    return ModelSpec(
        id=model_id, owned_by="stability-ai", created=1729036800, providers=providers,
        sizes=STABLE_IMAGE_SIZES, default_size="1024x1024", qualities=("standard",), default_quality="standard",
        styles=STABILITY_STYLES, max_n=10, native_max_n=1, max_prompt_chars=10000,
        capabilities=frozenset({"generate", "image_input"}), input_images=_V2_INPUT, description=description,
    )


SDXL = ModelSpec(
    id="sdxl-1.0", owned_by="stability-ai", created=1690848000, providers=("stability", "replicate"),
    sizes=SDXL_SIZES, default_size="1024x1024", qualities=("standard",), default_quality="standard",
    styles=STABILITY_STYLES, max_n=10, native_max_n=4, max_prompt_chars=2000,
    capabilities=frozenset({"generate"}),
    description="Stable Diffusion XL 1.0 (Stability AI v1 engine, or Replicate's stability-ai/sdxl).",
)
SD_1_6 = ModelSpec(
    id="sd-1.6", owned_by="stability-ai", created=1701388800, providers=("stability",),
    sizes=("512x512", "768x768", "1024x1024", "512x768", "768x512"), default_size="512x512",
    qualities=("standard",), default_quality="standard", styles=STABILITY_STYLES, max_n=10, native_max_n=10,
    max_prompt_chars=2000, capabilities=frozenset({"generate"}),
    description="Stable Diffusion 1.6 (Stability AI v1 engine stable-diffusion-v1-6).",
)
STABLE_IMAGE_CORE = dataclasses.replace(  # core has no image-to-image mode
    _stability_v2("stable-image-core", "Stability AI Stable Image Core (v2beta)."),
    capabilities=frozenset({"generate"}))
STABLE_IMAGE_ULTRA = _stability_v2("stable-image-ultra", "Stability AI Stable Image Ultra (v2beta).")
SD3_5_LARGE = _stability_v2("sd3.5-large", "Stable Diffusion 3.5 Large (Stability AI v2beta sd3).")
SD3_5_LARGE_TURBO = _stability_v2("sd3.5-large-turbo", "Stable Diffusion 3.5 Large Turbo (Stability AI v2beta sd3).")
SD3_5_MEDIUM = _stability_v2("sd3.5-medium", "Stable Diffusion 3.5 Medium (Stability AI v2beta sd3).")

# --- Black Forest Labs (Flux) and Replicate ----------------------------------------------------------------------
# BFL takes width/height in steps of 32 from 256 to 1440; ultra and kontext take an aspect ratio.
FLUX_SIZES = ("1024x1024", "1344x768", "768x1344", "1216x832", "832x1216", "1024x768", "768x1024", "1280x1024",
              "1024x1280", "512x512", "1440x1440")
FLUX_ULTRA_SIZES = ("2048x2048", "2752x1536", "1536x2752", "2496x1664", "1664x2496")
FLUX_ULTRA_ASPECT_RATIOS = {"2048x2048": "1:1", "2752x1536": "16:9", "1536x2752": "9:16", "2496x1664": "3:2",
                            "1664x2496": "2:3"}
KONTEXT_SIZES = ("1024x1024", "1344x768", "768x1344", "1216x832", "832x1216", "1024x768", "768x1024")
_FLUX_INPUT = InputImageRules(max_images=1, max_bytes=20 * 1024 * 1024, content_types=(PNG, JPEG, WEBP), square=False)

FLUX_PRO_1_1 = ModelSpec(
    id="flux-pro-1.1", owned_by="black-forest-labs", created=1727740800, providers=("bfl",),
    sizes=FLUX_SIZES, default_size="1024x1024", qualities=("standard",), default_quality="standard",
    max_n=10, native_max_n=1, max_prompt_chars=10000, capabilities=frozenset({"generate"}),
    description="FLUX1.1 [pro] from Black Forest Labs.",
)
FLUX_PRO_1_1_ULTRA = ModelSpec(
    id="flux-pro-1.1-ultra", owned_by="black-forest-labs", created=1731369600, providers=("bfl",),
    sizes=FLUX_ULTRA_SIZES, default_size="2048x2048", qualities=("standard",), default_quality="standard",
    max_n=10, native_max_n=1, max_prompt_chars=10000, capabilities=frozenset({"generate"}),
    description="FLUX1.1 [pro] ultra: about 4 megapixels, aspect ratios 1:1, 16:9, 9:16, 3:2, 2:3.",
)
FLUX_DEV = ModelSpec(
    id="flux-dev", owned_by="black-forest-labs", created=1722470400, providers=("bfl", "replicate"),
    sizes=FLUX_SIZES, default_size="1024x1024", qualities=("standard",), default_quality="standard",
    max_n=10, native_max_n=1, max_prompt_chars=10000, capabilities=frozenset({"generate"}),
    description="FLUX.1 [dev] (Black Forest Labs, or Replicate's black-forest-labs/flux-dev).",
)
FLUX_KONTEXT_PRO = ModelSpec(
    id="flux-kontext-pro", owned_by="black-forest-labs", created=1748736000, providers=("bfl",),
    sizes=KONTEXT_SIZES, default_size="1024x1024", qualities=("standard",), default_quality="standard",
    max_n=10, native_max_n=1, max_prompt_chars=10000,
    capabilities=frozenset({"generate", "edit", "image_input"}), input_images=_FLUX_INPUT,
    description="FLUX.1 Kontext [pro]: generation and in-context image editing.",
)
FLUX_KONTEXT_MAX = dataclasses.replace(FLUX_KONTEXT_PRO, id="flux-kontext-max",
                                       description="FLUX.1 Kontext [max]: the strongest Kontext model.")
FLUX_SCHNELL = ModelSpec(
    id="flux-schnell", owned_by="black-forest-labs", created=1722470400, providers=("replicate",),
    sizes=tuple(ASPECT_RATIOS), default_size="1024x1024", qualities=("standard",), default_quality="standard",
    max_n=10, native_max_n=4, max_prompt_chars=10000, capabilities=frozenset({"generate"}),
    description="FLUX.1 [schnell] on Replicate: fast, four steps.",
)
# FLUX.2 on BFL (docs/providers/bfl.md): width/height in multiples of 16, at least 64, at most 4 megapixels; priced per
# megapixel, so the larger sizes here cost more (billing/price_list.py). One task per image; generation only (FLUX.2
# edits are also charged per input megapixel, which a per-size price cannot express).
FLUX2_SIZES = ("1024x1024", "512x512", "768x768", "1344x768", "768x1344", "1216x832", "832x1216", "1024x768",
               "768x1024", "1536x1536", "1920x1088", "1088x1920", "2048x2048")


def _flux2(model_id: str, created: int, description: str) -> ModelSpec:
    return ModelSpec(
        id=model_id, owned_by="black-forest-labs", created=created, providers=("bfl",),
        sizes=FLUX2_SIZES, default_size="1024x1024", qualities=("standard",), default_quality="standard",
        max_n=10, native_max_n=1, max_prompt_chars=10000, capabilities=frozenset({"generate"}),
        description=description,
    )


# `created`: the day BFL's API served each model (reported; see docs/providers/bfl.md).
FLUX_2_PRO = _flux2("flux-2-pro", 1764028800, "FLUX.2 [pro] from Black Forest Labs: production quality, priced per "
                                              "megapixel.")
FLUX_2_FLEX = _flux2("flux-2-flex", 1764028800, "FLUX.2 [flex]: typography and fine detail, priced per megapixel.")
FLUX_2_MAX = _flux2("flux-2-max", 1764547200, "FLUX.2 [max]: the highest-quality FLUX.2 model, priced per "
                                              "megapixel.")
FLUX_2_KLEIN_4B = _flux2("flux-2-klein-4b", 1768435200, "FLUX.2 [klein] 4B: sub-second, the cheapest FLUX.2 model.")
FLUX_2_KLEIN_9B = _flux2("flux-2-klein-9b", 1768435200, "FLUX.2 [klein] 9B: fast, between [klein] 4B and [pro].")
SD_2_1 = ModelSpec(
    id="stable-diffusion-2.1", owned_by="stability-ai", created=1670198400, providers=("replicate",),
    sizes=("512x512", "768x768", "1024x1024", "768x512", "512x768"), default_size="768x768",
    qualities=("standard",), default_quality="standard", max_n=10, native_max_n=4, max_prompt_chars=2000,
    capabilities=frozenset({"generate"}),
    description="Stable Diffusion 2.1 on Replicate (stability-ai/stable-diffusion).",
)

# --- Amazon Bedrock -------------------------------------------------------------------------------------------------
TITAN_SIZES = ("1024x1024", "768x768", "512x512", "1152x768", "768x1152", "1280x768", "768x1280", "1152x896",
               "896x1152", "1408x768", "768x1408")
_TITAN_INPUT = InputImageRules(max_images=1, max_bytes=5 * 1024 * 1024, content_types=(PNG, JPEG), square=False)


def _bedrock(model_id: str, description: str, *, max_prompt_chars: int, created: int) -> ModelSpec:
    return ModelSpec(
        id=model_id, owned_by="amazon", created=created, providers=("bedrock",),
        sizes=TITAN_SIZES, default_size="1024x1024", qualities=("standard", "premium"), default_quality="standard",
        max_n=10, native_max_n=5, max_prompt_chars=max_prompt_chars,
        capabilities=frozenset({"generate", "edit", "variation", "image_input"}), input_images=_TITAN_INPUT,
        description=description,
    )


TITAN_V1 = _bedrock("titan-image-generator-v1", "Amazon Titan Image Generator G1 on Bedrock.",
                    max_prompt_chars=512, created=1701302400)
TITAN_V2 = _bedrock("titan-image-generator-v2", "Amazon Titan Image Generator G1 v2 on Bedrock (end of life "
                    "mid-2026; Nova Canvas is its successor).", max_prompt_chars=512, created=1723075200)
NOVA_CANVAS = _bedrock("nova-canvas", "Amazon Nova Canvas on Bedrock.", max_prompt_chars=1024, created=1733270400)

# --- Google Gemini image models (docs/providers/gemini.md) -------------------------------------------------------
# Each size is the exact output Google documents for an (aspectRatio, imageSize) pair: 1K, 2K and 4K tiers of the
# ratios 1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9. The size sets the tier, hence the price; one image
# per upstream call.
GEMINI_SIZES_1K = ("1024x1024", "848x1264", "1264x848", "896x1200", "1200x896", "928x1152", "1152x928", "768x1376",
                   "1376x768", "1584x672")
GEMINI_SIZES_2K = ("2048x2048", "1696x2528", "2528x1696", "1792x2400", "2400x1792", "1856x2304", "2304x1856",
                   "1536x2752", "2752x1536", "3168x1344")
GEMINI_SIZES_4K = ("4096x4096", "3392x5056", "5056x3392", "3584x4800", "4800x3584", "3712x4608", "4608x3712",
                   "3072x5504", "5504x3072", "6336x2688")
GEMINI_SIZES = GEMINI_SIZES_1K + GEMINI_SIZES_2K + GEMINI_SIZES_4K


def _gemini(model_id: str, description: str) -> ModelSpec:
    return ModelSpec(
        id=model_id, owned_by="google", created=1779926400, providers=("gemini",),
        sizes=GEMINI_SIZES, default_size="1024x1024", qualities=("standard",), default_quality="standard",
        max_n=10, native_max_n=1, max_prompt_chars=32000, capabilities=frozenset({"generate"}),
        description=description,
    )


GEMINI_3_1_FLASH_IMAGE = _gemini("gemini-3.1-flash-image", "Google Gemini 3.1 Flash Image (Nano Banana 2): 1K, 2K "
                                 "or 4K by size. One image per upstream call; n > 1 runs calls in parallel.")
GEMINI_3_PRO_IMAGE = _gemini("gemini-3-pro-image", "Google Gemini 3 Pro Image (Nano Banana Pro): thinks before it "
                             "draws; 1K, 2K or 4K by size. One image per upstream call.")

# --- Recraft (docs/providers/recraft.md): raster models only; the vector (SVG) models are not served --------------
RECRAFT_V3_SIZES = ("1024x1024", "2048x1024", "1024x2048", "1536x1024", "1024x1536", "1365x1024", "1024x1365",
                    "1280x1024", "1024x1280", "1024x1707", "1434x1024", "1024x1434", "1820x1024", "1024x1820")
RECRAFT_V4_SIZES = ("1024x1024", "1536x768", "768x1536", "1280x832", "832x1280", "1216x896", "896x1216", "1152x896",
                    "896x1152", "832x1344", "1280x896", "896x1280", "1344x768", "768x1344")
RECRAFT_V4_PRO_SIZES = ("2048x2048", "3072x1536", "1536x3072", "2560x1664", "1664x2560", "2432x1792", "1792x2432",
                        "2304x1792", "1792x2304", "1664x2688", "2560x1792", "1792x2560", "2688x1536", "1536x2688")
# Recraft V3's raster style families (vector_illustration and icon make SVG).
RECRAFT_V3_STYLES = ("any", "realistic_image", "digital_illustration", "logo_raster")


def _recraft(model_id: str, description: str, *, sizes: tuple[str, ...], created: int, max_prompt_chars: int = 10000,
             styles: tuple[str, ...] = ()) -> ModelSpec:
    return ModelSpec(
        id=model_id, owned_by="recraft", created=created, providers=("recraft",),
        sizes=sizes, default_size=sizes[0], qualities=("standard",), default_quality="standard", styles=styles,
        max_n=10, native_max_n=6, max_prompt_chars=max_prompt_chars, capabilities=frozenset({"generate"}),
        description=description,
    )


RECRAFT_V3 = _recraft("recraftv3", "Recraft V3: text placement and style families (any, realistic_image, "
                      "digital_illustration, logo_raster); raster.", sizes=RECRAFT_V3_SIZES, created=1727740800,
                      max_prompt_chars=1000, styles=RECRAFT_V3_STYLES)
RECRAFT_V4 = _recraft("recraftv4", "Recraft V4: design-led raster images at 1K.", sizes=RECRAFT_V4_SIZES,
                      created=1769904000)
RECRAFT_V4_PRO = _recraft("recraftv4_pro", "Recraft V4 Pro: 2K raster images with finer detail.",
                          sizes=RECRAFT_V4_PRO_SIZES, created=1769904000)
RECRAFT_V4_1 = _recraft("recraftv4_1", "Recraft V4.1: Recraft's default model, raster at 1K.",
                        sizes=RECRAFT_V4_SIZES, created=1778716800)
RECRAFT_V4_1_PRO = _recraft("recraftv4_1_pro", "Recraft V4.1 Pro: 2K raster images.", sizes=RECRAFT_V4_PRO_SIZES,
                            created=1778716800)

# --- Ideogram (docs/providers/ideogram.md) --------------------------------------------------------------------------
# quality low / medium / high = Ideogram's rendering speed TURBO / DEFAULT / QUALITY; style = its style_type.
IDEOGRAM_SIZES = ("1024x1024", "1312x736", "736x1312", "1344x768", "768x1344", "1248x832", "832x1248", "1216x832",
                  "832x1216", "1152x864", "864x1152", "1120x896", "896x1120", "1280x800", "800x1280", "1408x704",
                  "704x1408", "1536x512", "512x1536")
IDEOGRAM_V3 = ModelSpec(
    id="ideogram-v3", owned_by="ideogram", created=1742947200, providers=("ideogram",),
    sizes=IDEOGRAM_SIZES, default_size="1024x1024", qualities=("low", "medium", "high"), default_quality="medium",
    styles=("auto", "general", "realistic", "design", "fiction"), max_n=10, native_max_n=8, max_prompt_chars=10000,
    capabilities=frozenset({"generate"}),
    description="Ideogram 3.0: legible text in images. quality low / medium / high = rendering speed Turbo / "
                "Default / Quality.",
)

MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in [
        LOCAL_PREVIEW, DALL_E_2, DALL_E_3, GPT_IMAGE_1, GPT_IMAGE_1_MINI, GPT_IMAGE_1_5, GPT_IMAGE_2,
        CHATGPT_IMAGE_LATEST,
        SDXL, SD_1_6, STABLE_IMAGE_CORE, STABLE_IMAGE_ULTRA, SD3_5_LARGE, SD3_5_LARGE_TURBO, SD3_5_MEDIUM,
        FLUX_PRO_1_1, FLUX_PRO_1_1_ULTRA, FLUX_DEV, FLUX_KONTEXT_PRO, FLUX_KONTEXT_MAX,
        FLUX_2_PRO, FLUX_2_FLEX, FLUX_2_MAX, FLUX_2_KLEIN_4B, FLUX_2_KLEIN_9B, FLUX_SCHNELL, SD_2_1,
        TITAN_V1, TITAN_V2, NOVA_CANVAS,
        GEMINI_3_1_FLASH_IMAGE, GEMINI_3_PRO_IMAGE,
        RECRAFT_V3, RECRAFT_V4, RECRAFT_V4_PRO, RECRAFT_V4_1, RECRAFT_V4_1_PRO,
        IDEOGRAM_V3,
    ]
}

DEFAULT_MODEL = "local-preview"


def get_model(model_id: str) -> ModelSpec | None:
    return MODELS.get(model_id)


def available_models(enabled_providers: set[str]) -> list[ModelSpec]:
    """The models at least one enabled provider serves, in catalog order."""
    return [m for m in MODELS.values() if enabled_providers.intersection(m.providers)]

# gpt-image "auto": when the upstream does not say what it produced, price it as its most common result.
AUTO_SIZE = "1024x1024"
AUTO_QUALITY = "medium"

SELF_HOSTED_SIZES = ("256x256", "512x512", "1024x1024", "1024x1792", "1792x1024")


def register_self_hosted(model_id: str) -> ModelSpec:
    """A model served by an OpenAI-compatible server of the operator's (OPENAI_COMPATIBLE_MODELS)."""
    spec = MODELS.get(model_id)
    if spec is None:
        spec = ModelSpec(
            id=model_id, owned_by="self-hosted", created=1764028800, providers=("openai_compatible",),
            sizes=SELF_HOSTED_SIZES, default_size="1024x1024", qualities=("standard",), default_quality="standard",
            max_n=10, native_max_n=10, max_prompt_chars=4000, capabilities=frozenset({"generate"}),
            description="Self-hosted model behind an OpenAI-compatible server.",
        )
        MODELS[model_id] = spec
    return spec
