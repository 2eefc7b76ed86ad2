"""The built-in offline model `local-preview`: draws a deterministic picture from the prompt and seed with Pillow.

Palette and shapes come from the words of the prompt; the layout from a PRNG seeded by the prompt and seed, so
identical requests give identical PNG bytes. Rendering is CPU work, so it runs in a worker thread and never blocks
the event loop.
"""
import asyncio
import colorsys
import hashlib
import io
import random
import re

from PIL import Image, ImageDraw, ImageFilter, ImageOps

from .base import GeneratedImage, ImageRequest, InputImage, ProviderResult

_WORD = re.compile(r"[\w']+", re.UNICODE)


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _color(word: str, *, lightness: float, saturation: float = 0.65) -> tuple[int, int, int]:
    hue = (_hash_int("hue:" + word) % 3600) / 3600.0
    r, g, b = colorsys.hls_to_rgb(hue, lightness, saturation)
    return int(r * 255), int(g * 255), int(b * 255)


def palette_for(prompt: str) -> list[tuple[int, int, int]]:
    """Colours from the prompt's words (at least three); the same words always give the same palette."""
    words = [w.lower() for w in _WORD.findall(prompt)] or [prompt or "empty"]
    colours = [_color(w, lightness=0.35 + (_hash_int("l:" + w) % 30) / 100.0) for w in words[:12]]
    while len(colours) < 3:
        colours.append(_color(f"{words[0]}#{len(colours)}", lightness=0.55))
    return colours


def _encode(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG", compress_level=3)
    return out.getvalue()


def _fit(image: "InputImage | bytes", width: int, height: int) -> Image.Image:
    """An input image scaled and centre-cropped to width × height, as RGBA: from the copy the gateway decoded once
    (InputImage.pixels), or decoded here when there is none."""
    pixels = getattr(image, "pixels", None)
    if pixels is not None:
        return ImageOps.fit(pixels, (width, height), method=Image.Resampling.LANCZOS)
    data = image.data if isinstance(image, InputImage) else image
    with Image.open(io.BytesIO(data)) as source:
        return ImageOps.fit(source.convert("RGBA"), (width, height), method=Image.Resampling.LANCZOS)


def _alpha(mask: "InputImage | bytes", width: int, height: int) -> Image.Image:
    pixels = getattr(mask, "pixels", None)
    if pixels is not None:
        return pixels.resize((width, height)).getchannel("A")
    data = mask.data if isinstance(mask, InputImage) else mask
    with Image.open(io.BytesIO(data)) as m:
        return m.convert("RGBA").resize((width, height)).getchannel("A")


def render_edit_png(prompt: str, seed: int, width: int, height: int, images: list, mask) -> bytes:
    """Edit: the prompt's picture painted into the input image where the mask is transparent (alpha 0); with no
    mask, blended over the whole image. Several input images are layered first, as references."""
    base = _fit(images[0], width, height)
    for extra in images[1:]:
        base = Image.blend(base, _fit(extra, width, height), 0.3)
    painted = _render(prompt, seed, width, height)
    if mask is not None:
        edit_area = ImageOps.invert(_alpha(mask, width, height))  # alpha 0 → 255: paint here
        base.paste(painted, (0, 0), edit_area)
        return _encode(base)
    return _encode(Image.blend(base, painted, 0.45))


def render_variation_png(seed: int, width: int, height: int, image) -> bytes:
    """Variation: the input image, reframed and recoloured, with shapes derived from its own content and the seed."""
    base = _fit(image, width, height)
    fingerprint = hashlib.sha256(image.data if isinstance(image, InputImage) else image).hexdigest()
    rng = random.Random(_hash_int(f"{seed}\x00{fingerprint}"))
    shifted = ImageOps.mirror(base) if rng.random() < 0.5 else base
    overlay = _render(fingerprint[:16] + f" {seed}", seed, width, height)
    return _encode(Image.blend(shifted, overlay, 0.25 + rng.random() * 0.15))


def render_png(prompt: str, seed: int, width: int, height: int) -> bytes:
    return _encode(_render(prompt, seed, width, height))


def _render(prompt: str, seed: int, width: int, height: int) -> Image.Image:
    words = [w.lower() for w in _WORD.findall(prompt)] or ["empty"]
    palette = palette_for(prompt)
    rng = random.Random(_hash_int(f"{seed}\x00{prompt}"))

    # Background: a vertical gradient between the first two colours of the palette.
    gradient = Image.linear_gradient("L").resize((width, height))
    image = ImageOps.colorize(gradient, black=palette[0], white=palette[1]).convert("RGBA")

    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    scale = min(width, height)
    shapes = min(6 + 3 * len(words), 48)
    for i in range(shapes):
        word = words[i % len(words)]
        r, g, b = palette[(i + 2) % len(palette)]
        alpha = 90 + rng.randrange(120)
        cx, cy = rng.randrange(width), rng.randrange(height)
        radius = max(4, int(scale * (0.03 + rng.random() * 0.22)))
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        kind = _hash_int("shape:" + word) % 4
        fill = (r, g, b, alpha)
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        elif kind == 2:
            sides = 3 + _hash_int("sides:" + word) % 5
            draw.regular_polygon((cx, cy, radius), n_sides=sides, rotation=rng.randrange(360), fill=fill)
        else:
            x2, y2 = rng.randrange(width), rng.randrange(height)
            draw.line((cx, cy, x2, y2), fill=fill, width=max(2, radius // 4))
    return Image.alpha_composite(image, overlay.filter(ImageFilter.GaussianBlur(radius=scale / 400)))


class LocalProvider:
    """Provider `local`: serves `local-preview` offline, in every mode (generate, edit, variation)."""

    name = "local"

    def serves(self) -> set[str]:
        return {"local-preview"}

    def upstream_cost_micros(self, request: ImageRequest) -> int:
        return 0

    async def run(self, request: ImageRequest) -> ProviderResult:
        base_seed = request.seed or 0
        w, h = request.width, request.height
        images = []
        for i in range(request.n):
            seed = base_seed + i
            if request.mode == "variation":
                data = await asyncio.to_thread(render_variation_png, seed, w, h, request.images[0])
            elif request.mode == "edit":
                data = await asyncio.to_thread(render_edit_png, request.prompt, seed, w, h, list(request.images),
                                               request.mask)
            else:
                data = await asyncio.to_thread(render_png, request.prompt, seed, w, h)
            revised = request.prompt if request.mode != "variation" else None
            images.append(GeneratedImage(data=data, content_type="image/png", revised_prompt=revised))
        return ProviderResult(images=images, upstream_cost_micros=0)
