"""Our list prices, as data: (model, size, quality, micro-USD per image, effective from, UTC).

Append-only: to change a price add a row with a later effective date; never edit one that has been in force, since
ledger rows point at it. `manage.py sync_prices` (and the migrations) insert rows that are missing.
"""
from datetime import UTC, datetime

_2025 = datetime(2025, 1, 1, tzinfo=UTC)

PRICE_LIST: list[tuple[str, str, str, int, datetime]] = [
    # The built-in offline model: $0.001 per image at every size, so money flows end to end from day one.
    ("local-preview", "256x256", "standard", 1_000, _2025),
    ("local-preview", "512x512", "standard", 1_000, _2025),
    ("local-preview", "1024x1024", "standard", 1_000, _2025),
    ("local-preview", "1024x1792", "standard", 1_000, _2025),
    ("local-preview", "1792x1024", "standard", 1_000, _2025),
    # OpenAI: upstream list price + 10% (docs/providers/openai.md lists the upstream prices).
    ("dall-e-2", "256x256", "standard", 17_600, _2025),
    ("dall-e-2", "512x512", "standard", 19_800, _2025),
    ("dall-e-2", "1024x1024", "standard", 22_000, _2025),
    ("dall-e-3", "1024x1024", "standard", 44_000, _2025),
    ("dall-e-3", "1024x1792", "standard", 88_000, _2025),
    ("dall-e-3", "1792x1024", "standard", 88_000, _2025),
    ("dall-e-3", "1024x1024", "hd", 88_000, _2025),
    ("dall-e-3", "1024x1792", "hd", 132_000, _2025),
    ("dall-e-3", "1792x1024", "hd", 132_000, _2025),
    ("gpt-image-1", "1024x1024", "low", 12_100, _2025),
    ("gpt-image-1", "1024x1024", "medium", 46_200, _2025),
    ("gpt-image-1", "1024x1024", "high", 183_700, _2025),
    ("gpt-image-1", "1024x1536", "low", 17_600, _2025),
    ("gpt-image-1", "1024x1536", "medium", 69_300, _2025),
    ("gpt-image-1", "1024x1536", "high", 275_000, _2025),
    ("gpt-image-1", "1536x1024", "low", 17_600, _2025),
    ("gpt-image-1", "1536x1024", "medium", 69_300, _2025),
    ("gpt-image-1", "1536x1024", "high", 275_000, _2025),
]



def _flat(model: str, sizes: tuple[str, ...], micros: int, quality: str = "standard"):
    return [(model, size, quality, micros, _2025) for size in sizes]


def _pixels(size: str) -> int:
    w, h = size.split("x")
    return int(w) * int(h)


# Upstream models: upstream list price + 10%, the same at every size unless the upstream's differs. Upstream prices:
# docs/providers/stability.md, bfl.md, replicate.md and bedrock.md.
# Sizes here mirror generation/catalog.py; tests check that every catalog model, size and quality has a price.
_SDXL_SIZES = ("1024x1024", "1152x896", "896x1152", "1216x832", "1344x768", "768x1344", "1536x640", "640x1536")
_STABLE_IMAGE_SIZES = ("1024x1024", "1344x768", "768x1344", "1216x832", "832x1216", "1280x1024", "1024x1280",
                       "1568x672", "672x1568")
_FLUX_SIZES = ("1024x1024", "1344x768", "768x1344", "1216x832", "832x1216", "1024x768", "768x1024", "1280x1024",
               "1024x1280", "512x512", "1440x1440")
_FLUX_ULTRA_SIZES = ("2048x2048", "2752x1536", "1536x2752", "2496x1664", "1664x2496")
_KONTEXT_SIZES = ("1024x1024", "1344x768", "768x1344", "1216x832", "832x1216", "1024x768", "768x1024")
_ASPECT_SIZES = ("1024x1024", "1344x768", "768x1344", "1216x832", "832x1216", "1280x1024", "1024x1280", "1568x672",
                 "672x1568", "1024x768", "768x1024")
_TITAN_SIZES = ("1024x1024", "768x768", "512x512", "1152x768", "768x1152", "1280x768", "768x1280", "1152x896",
                "896x1152", "1408x768", "768x1408")

# FLUX.2 (Black Forest Labs) is priced per megapixel of output (docs/providers/bfl.md: BFL's pricing page and the
# formula in BFL's API guide, read 2026-11-30). One w x h image costs BFL's first-megapixel price plus its
# per-megapixel price for each pixel beyond 1,000,000, pro rata (micro-USD):
#     upstream = first + extra * max(0, w * h - 1_000_000) / 1_000_000
#     ours     = ceil(upstream * 1.1)   (one rounding up, on the exact value, to a whole micro-dollar)
# (first, extra) mirror generation/providers/bfl.py's FLUX2_TARIFFS (billing cannot import generation; a test checks).
_FLUX2_TARIFFS_MICROS = {
    "flux-2-klein-4b": (14_000, 1_000),
    "flux-2-klein-9b": (15_000, 2_000),
    "flux-2-pro": (30_000, 15_000),
    "flux-2-flex": (50_000, 50_000),
    "flux-2-max": (70_000, 30_000),
}
_FLUX2_SIZES = ("1024x1024", "512x512", "768x768", "1344x768", "768x1344", "1216x832", "832x1216", "1024x768",
                "768x1024", "1536x1536", "1920x1088", "1088x1920", "2048x2048")
_FLUX2_FROM = datetime(2026, 11, 30, tzinfo=UTC)  # when the gateway began to serve FLUX.2


def flux2_list_price_micros(model: str, size: str) -> int:
    """Our price for one FLUX.2 image of `size` (WIDTHxHEIGHT), micro-USD: BFL's per-megapixel price + 10%, rounded
    up. E.g. flux-2-pro 1024x1024: BFL 30,000 + 15,000 x 0.048576 = 30,728.64 → ours ceil(33,801.504) = 33,802."""
    first, extra = _FLUX2_TARIFFS_MICROS[model]
    upstream_times_million = first * 1_000_000 + extra * max(0, _pixels(size) - 1_000_000)
    return -(-upstream_times_million * 11 // 10_000_000)


PRICE_LIST += [
    *_flat("sdxl-1.0", _SDXL_SIZES, 11_000),
    *_flat("sd-1.6", ("512x512", "768x768", "1024x1024", "512x768", "768x512"), 11_000),
    *_flat("stable-image-core", _STABLE_IMAGE_SIZES, 33_000),
    *_flat("stable-image-ultra", _STABLE_IMAGE_SIZES, 88_000),
    *_flat("sd3.5-large", _STABLE_IMAGE_SIZES, 71_500),
    *_flat("sd3.5-large-turbo", _STABLE_IMAGE_SIZES, 44_000),
    *_flat("sd3.5-medium", _STABLE_IMAGE_SIZES, 38_500),
    *_flat("flux-pro-1.1", _FLUX_SIZES, 44_000),
    *_flat("flux-pro-1.1-ultra", _FLUX_ULTRA_SIZES, 66_000),
    *_flat("flux-dev", _FLUX_SIZES, 27_500),
    *_flat("flux-kontext-pro", _KONTEXT_SIZES, 44_000),
    *_flat("flux-kontext-max", _KONTEXT_SIZES, 88_000),
    *[(m, size, "standard", flux2_list_price_micros(m, size), _FLUX2_FROM)
      for m in _FLUX2_TARIFFS_MICROS for size in _FLUX2_SIZES],
    *_flat("flux-schnell", _ASPECT_SIZES, 3_300),
    *_flat("stable-diffusion-2.1", ("512x512", "768x768", "1024x1024", "768x512", "512x768"), 4_000),
    # Titan: $0.008 / $0.010 standard and $0.010 / $0.012 premium, at up to 512x512 / above.
    *[(m, size, quality, micros, _2025)
      for m in ("titan-image-generator-v1", "titan-image-generator-v2")
      for size in _TITAN_SIZES
      for quality, micros in (("standard", 8_800 if _pixels(size) <= 512 * 512 else 11_000),
                              ("premium", 11_000 if _pixels(size) <= 512 * 512 else 13_200))],
    # Nova Canvas: $0.04 / $0.06 standard and $0.06 / $0.08 premium, at up to 1024x1024 / above.
    *[("nova-canvas", size, quality, micros, _2025)
      for size in _TITAN_SIZES
      for quality, micros in (("standard", 44_000 if _pixels(size) <= 1024 * 1024 else 66_000),
                              ("premium", 66_000 if _pixels(size) <= 1024 * 1024 else 88_000))],
]

# Gemini, Recraft, Ideogram (issue 13): upstream list price + 10%, effective 2026-11-30 (the upstream prices as read
# on 2026-11-30; sources and dates in docs/providers/<provider>.md). Sizes mirror generation/catalog.py.
_2026_11_30 = datetime(2026, 11, 30, tzinfo=UTC)
_GEMINI_1K = ("1024x1024", "848x1264", "1264x848", "896x1200", "1200x896", "928x1152", "1152x928", "768x1376",
              "1376x768", "1584x672")
_GEMINI_2K = ("2048x2048", "1696x2528", "2528x1696", "1792x2400", "2400x1792", "1856x2304", "2304x1856", "1536x2752",
              "2752x1536", "3168x1344")
_GEMINI_4K = ("4096x4096", "3392x5056", "5056x3392", "3584x4800", "4800x3584", "3712x4608", "4608x3712", "3072x5504",
              "5504x3072", "6336x2688")
_RECRAFT_V3_SIZES = ("1024x1024", "2048x1024", "1024x2048", "1536x1024", "1024x1536", "1365x1024", "1024x1365",
                     "1280x1024", "1024x1280", "1024x1707", "1434x1024", "1024x1434", "1820x1024", "1024x1820")
_RECRAFT_V4_SIZES = ("1024x1024", "1536x768", "768x1536", "1280x832", "832x1280", "1216x896", "896x1216",
                     "1152x896", "896x1152", "832x1344", "1280x896", "896x1280", "1344x768", "768x1344")
_RECRAFT_V4_PRO_SIZES = ("2048x2048", "3072x1536", "1536x3072", "2560x1664", "1664x2560", "2432x1792", "1792x2432",
                         "2304x1792", "1792x2304", "1664x2688", "2560x1792", "1792x2560", "2688x1536", "1536x2688")
_IDEOGRAM_SIZES = ("1024x1024", "1312x736", "736x1312", "1344x768", "768x1344", "1248x832", "832x1248", "1216x832",
                   "832x1216", "1152x864", "864x1152", "1120x896", "896x1120", "1280x800", "800x1280", "1408x704",
                   "704x1408", "1536x512", "512x1536")


def _from(model: str, sizes: tuple[str, ...], micros: int, quality: str = "standard"):
    return [(model, size, quality, micros, _2026_11_30) for size in sizes]


PRICE_LIST += [
    # Gemini 3.1 Flash Image: image output $60 / 1M tokens; 1,120 / 1,680 / 2,520 tokens per 1K / 2K / 4K image
    # ($0.0672 / $0.1008 / $0.1512).
    *_from("gemini-3.1-flash-image", _GEMINI_1K, 73_920),
    *_from("gemini-3.1-flash-image", _GEMINI_2K, 110_880),
    *_from("gemini-3.1-flash-image", _GEMINI_4K, 166_320),
    # Gemini 3 Pro Image: $120 / 1M tokens; 1,120 tokens per 1K or 2K image ($0.1344), 2,000 per 4K ($0.24).
    *_from("gemini-3-pro-image", _GEMINI_1K + _GEMINI_2K, 147_840),
    *_from("gemini-3-pro-image", _GEMINI_4K, 264_000),
    # Recraft, per raster image: V3 $0.04, V4 $0.04, V4 Pro $0.25, V4.1 $0.035, V4.1 Pro $0.21.
    *_from("recraftv3", _RECRAFT_V3_SIZES, 44_000),
    *_from("recraftv4", _RECRAFT_V4_SIZES, 44_000),
    *_from("recraftv4_pro", _RECRAFT_V4_PRO_SIZES, 275_000),
    *_from("recraftv4_1", _RECRAFT_V4_SIZES, 38_500),
    *_from("recraftv4_1_pro", _RECRAFT_V4_PRO_SIZES, 231_000),
    # Ideogram 3.0 per image: Turbo $0.03 (low), Default $0.06 (medium), Quality $0.09 (high).
    *_from("ideogram-v3", _IDEOGRAM_SIZES, 33_000, "low"),
    *_from("ideogram-v3", _IDEOGRAM_SIZES, 66_000, "medium"),
    *_from("ideogram-v3", _IDEOGRAM_SIZES, 99_000, "high"),
]


# OpenAI's current GPT image models (issue 13): upstream list price + 10%, rounded up to a whole micro-dollar,
# effective 2026-11-30. Sources and dates: docs/providers/openai.md. Per-image prices (micro-USD, low/medium/high at
# 1024x1024 and at 1536x1024 or 1024x1536) mirror generation/providers/openai.py (a test checks).
_GPT_IMAGE_STANDARD = ("1024x1024", "1536x1024", "1024x1536")
_GPT_IMAGE_PER_IMAGE_MICROS = {
    "gpt-image-1-mini": {"low": (5_000, 6_000), "medium": (11_000, 15_000), "high": (36_000, 52_000)},
    "gpt-image-1.5": {"low": (9_000, 13_000), "medium": (34_000, 50_000), "high": (133_000, 200_000)},
}
# gpt-image-2 is priced per output token ($30 per 1M image output tokens); the tokens of one image follow from its
# size and quality (OpenAI's cost calculator; generation/providers/openai.py has the same formula, a test checks).
GPT_IMAGE_2_OUTPUT_MICROS_PER_MILLION_TOKENS = 30_000_000
_GPT_IMAGE_2_QUALITY_FACTORS = {"low": 16, "medium": 48, "high": 96}
GPT_IMAGE_2_LISTED_SIZES = _GPT_IMAGE_STANDARD + ("2048x2048", "2048x1152", "1152x2048", "2560x1440", "1440x2560",
                                                  "3840x2160", "2160x3840")
_GPT_IMAGE_FROM = datetime(2026, 11, 30, tzinfo=UTC)
# Formula-priced models: a size within the model's rules that has no row yet gets one, at the formula's price and
# this effective date, on its first use (materialize()); listed sizes are seeded like any other price.
FORMULA_PRICED = {"gpt-image-2": _GPT_IMAGE_FROM}


def _ours(upstream_micros: int) -> int:
    return -(-upstream_micros * 11 // 10)


def gpt_image_2_output_tokens(width: int, height: int, quality: str) -> int:
    """Image output tokens of one gpt-image-2 image (OpenAI's calculator): 1024x1024 low / medium / high → 196 /
    1,756 / 7,024 tokens ($0.006 / $0.053 / $0.211 at $30 per 1M)."""
    factor = _GPT_IMAGE_2_QUALITY_FACTORS[quality]
    long_edge, short_edge = max(width, height), min(width, height)
    short_axis = (2 * factor * short_edge + long_edge) // (2 * long_edge)
    return (factor * short_axis * (2_000_000 + width * height) + 3_999_999) // 4_000_000


def gpt_image_2_size_ok(size: str) -> bool:
    """gpt-image-2's size rules (generation/catalog.py FreeSizes has the same, with messages): both sides multiples
    of 16, aspect between 1:3 and 3:1, at most 3840 a side and 3840x2160 pixels, at least 655,360 pixels."""
    w, sep, h = size.partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or len(size) > 11:
        return False
    width, height = int(w), int(h)
    return (width > 0 and height > 0 and not width % 16 and not height % 16
            and max(width, height) <= 3 * min(width, height) and max(width, height) <= 3840
            and 655_360 <= width * height <= 3840 * 2160)


def gpt_image_2_list_price_micros(size: str, quality: str) -> int:
    """Our price for one gpt-image-2 image: OpenAI's output-token price (rounded up) + 10%, rounded up (micro-USD).
    1024x1024 high: 7,024 tokens → $0.21072 upstream → 231,792 micro-USD."""
    w, _, h = size.partition("x")
    tokens = gpt_image_2_output_tokens(int(w), int(h), quality)
    return _ours(-(-tokens * GPT_IMAGE_2_OUTPUT_MICROS_PER_MILLION_TOKENS // 1_000_000))


def formula_price(model: str, size: str, quality: str) -> tuple[int, datetime] | None:
    """(micro-USD per image, effective from) for a formula-priced model's size and quality, or None when the model
    is not formula-priced or the size/quality is outside its rules."""
    if model not in FORMULA_PRICED or quality not in _GPT_IMAGE_2_QUALITY_FACTORS or not gpt_image_2_size_ok(size):
        return None
    return gpt_image_2_list_price_micros(size, quality), FORMULA_PRICED[model]


def materialize(price_model, model: str, size: str, quality: str) -> bool:
    """Insert the formula price row for (model, size, quality) if the model is formula-priced and the size within
    its rules; True when a row now exists. Idempotent across processes (the unique price version)."""
    found = formula_price(model, size, quality)
    if found is None:
        return False
    micros, effective_from = found
    price_model.objects.bulk_create([price_model(model=model, size=size, quality=quality, unit_price_micros=micros,
                                                 effective_from=effective_from)], ignore_conflicts=True)
    return True


PRICE_LIST += [
    *[(m, size, quality, _ours(micros[0] if size == "1024x1024" else micros[1]), _GPT_IMAGE_FROM)
      for m, table in _GPT_IMAGE_PER_IMAGE_MICROS.items() for quality, micros in table.items()
      for size in _GPT_IMAGE_STANDARD],
    *[("gpt-image-2", size, quality, gpt_image_2_list_price_micros(size, quality), _GPT_IMAGE_FROM)
      for size in GPT_IMAGE_2_LISTED_SIZES for quality in ("low", "medium", "high")],
    # chatgpt-image-latest points at gpt-image-2's snapshot today: priced as gpt-image-2 at the standard sizes.
    *[("chatgpt-image-latest", size, quality, gpt_image_2_list_price_micros(size, quality), _GPT_IMAGE_FROM)
      for size in _GPT_IMAGE_STANDARD for quality in ("low", "medium", "high")],
]


def sync(price_model) -> int:
    """Insert the rows of PRICE_LIST that `price_model` lacks (one read, one bulk insert); returns how many."""
    existing = set(price_model.objects.values_list("model", "size", "quality", "effective_from"))
    missing = [
        price_model(model=model, size=size, quality=quality, unit_price_micros=micros, effective_from=effective_from)
        for model, size, quality, micros, effective_from in PRICE_LIST
        if (model, size, quality, effective_from) not in existing
    ]
    price_model.objects.bulk_create(missing, ignore_conflicts=True)
    return len(missing)


_SELF_HOSTED_SIZES = ("256x256", "512x512", "1024x1024", "1024x1792", "1792x1024")


def sync_self_hosted(price_model, *, models: list[str], micros: int, now) -> int:
    """Price rows for operator-configured self-hosted models (OPENAI_COMPATIBLE_MODELS) at `micros` per image:
    a new row, effective now, wherever the price in force differs (or none exists)."""
    if micros <= 0:
        raise ValueError("OPENAI_COMPATIBLE_PRICE_MICROS must be positive: a model is never served at $0.")
    added = 0
    for model in models:
        for size in _SELF_HOSTED_SIZES:
            current = (price_model.objects.filter(model=model, size=size, quality="standard", effective_from__lte=now)
                       .order_by("-effective_from").first())
            if current is None or current.unit_price_micros != micros:
                price_model.objects.create(model=model, size=size, quality="standard", unit_price_micros=micros,
                                           effective_from=now)
                added += 1
    return added
