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

from .base import GeneratedImage, ImageRequest, ProviderResult

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


def render_png(prompt: str, seed: int, width: int, height: int) -> bytes:
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
    image = Image.alpha_composite(image, overlay.filter(ImageFilter.GaussianBlur(radius=scale / 400)))

    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG", compress_level=3)
    return out.getvalue()


class LocalProvider:
    """Provider `local`: serves `local-preview` offline."""

    name = "local"

    async def generate(self, request: ImageRequest) -> ProviderResult:
        base_seed = request.seed or 0
        images = []
        for i in range(request.n):
            data = await asyncio.to_thread(render_png, request.prompt, base_seed + i, request.width, request.height)
            images.append(GeneratedImage(data=data, content_type="image/png", revised_prompt=request.prompt))
        return ProviderResult(images=images, upstream_cost_micros=0)
