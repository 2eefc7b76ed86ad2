"""The built-in offline model `local-preview`: draws a labelled, deterministic preview of the prompt with Pillow.

What a person sees (docs/decisions.md §33): a backdrop in the colours the prompt names ("a red fox in a snowy
forest" → red, snow white, forest green; see NAMED_COLOURS and SCENE_COLOURS), soft shapes placed by a PRNG seeded
by the prompt and seed, the prompt's own words in a panel, the palette as named swatches, and an "OFFLINE PREVIEW"
band, so nobody mistakes it for a model's output. Text uses Pillow's built-in font (ImageFont.load_default(size=…),
FreeType), so the same prompt and seed give the same PNG bytes on every machine with the same Pillow. Rendering is
CPU work, so it runs in a worker thread and never blocks the event loop.
"""
import asyncio
import colorsys
import hashlib
import io
import random
import re

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from .base import GeneratedImage, ImageRequest, InputImage, ProviderResult

_WORD = re.compile(r"[\w']+", re.UNICODE)


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _color(word: str, *, lightness: float, saturation: float = 0.65) -> tuple[int, int, int]:
    hue = (_hash_int("hue:" + word) % 3600) / 3600.0
    r, g, b = colorsys.hls_to_rgb(hue, lightness, saturation)
    return int(r * 255), int(g * 255), int(b * 255)


# Colour words a prompt may use, as RGB. Sources: CSS Color Module Level 4's named colours (w3.org/TR/css-color-4)
# for the common names, rounded where CSS's value is not what the word evokes in a picture (e.g. "green").
NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (211, 47, 47), "scarlet": (255, 36, 0), "crimson": (220, 20, 60), "maroon": (128, 0, 0),
    "orange": (245, 124, 0), "amber": (255, 191, 0), "gold": (255, 200, 40), "golden": (255, 200, 40),
    "yellow": (253, 216, 53), "lime": (124, 200, 40), "green": (56, 142, 60), "emerald": (0, 155, 119),
    "olive": (128, 128, 0), "mint": (152, 230, 190), "teal": (0, 128, 128), "turquoise": (64, 224, 208),
    "cyan": (0, 188, 212), "aqua": (0, 200, 220), "azure": (0, 127, 255), "blue": (30, 100, 220),
    "navy": (0, 0, 128), "indigo": (75, 0, 130), "violet": (143, 0, 255), "purple": (123, 31, 162),
    "lavender": (181, 160, 230), "magenta": (216, 27, 96), "pink": (240, 98, 146), "rose": (255, 102, 153),
    "coral": (255, 127, 80), "salmon": (250, 128, 114), "peach": (255, 203, 164), "brown": (121, 85, 72),
    "chocolate": (123, 63, 0), "rust": (183, 65, 14), "ochre": (204, 119, 34), "tan": (210, 180, 140),
    "beige": (225, 210, 180), "ivory": (255, 255, 240), "cream": (255, 253, 208), "white": (245, 245, 245),
    "silver": (192, 192, 192), "grey": (128, 128, 128), "gray": (128, 128, 128), "charcoal": (54, 69, 79),
    "black": (25, 25, 25),
}
# Scene words that imply a colour when the prompt names none, so "a snowy forest at sunset" still looks like one.
SCENE_COLOURS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "snow": ("snow white", (240, 244, 250)), "snowy": ("snow white", (240, 244, 250)),
    "ice": ("ice blue", (190, 225, 245)), "winter": ("winter white", (230, 236, 244)),
    "forest": ("forest green", (34, 100, 52)), "tree": ("leaf green", (70, 140, 60)),
    "trees": ("leaf green", (70, 140, 60)), "grass": ("grass green", (100, 170, 60)),
    "jungle": ("jungle green", (30, 110, 60)), "leaf": ("leaf green", (70, 140, 60)),
    "sky": ("sky blue", (135, 195, 235)), "ocean": ("ocean blue", (20, 90, 160)),
    "sea": ("sea blue", (30, 110, 170)),
    "lake": ("lake blue", (60, 120, 170)), "river": ("river blue", (70, 130, 180)),
    "water": ("water blue", (60, 140, 200)),
    "storm": ("storm grey", (80, 90, 105)), "cloud": ("cloud grey", (200, 205, 215)),
    "night": ("night blue", (20, 24, 60)),
    "sunset": ("sunset orange", (250, 120, 60)), "sunrise": ("sunrise pink", (250, 160, 130)),
    "dawn": ("dawn pink", (245, 180, 160)), "fire": ("fire orange", (235, 80, 20)),
    "lava": ("lava red", (200, 40, 10)),
    "sun": ("sun yellow", (255, 210, 60)), "desert": ("sand", (215, 185, 130)), "sand": ("sand", (215, 185, 130)),
    "beach": ("sand", (225, 200, 150)), "mountain": ("stone grey", (120, 120, 130)),
    "stone": ("stone grey", (130, 130, 135)),
    "fox": ("fox orange", (210, 100, 40)), "lighthouse": ("lighthouse red", (200, 40, 40)),
    "moon": ("moon silver", (210, 215, 225)), "space": ("space black", (10, 10, 30)),
    "city": ("city grey", (90, 95, 110)),
}
MAX_SWATCHES = 6


def named_palette(prompt: str) -> list[tuple[str, tuple[int, int, int]]]:
    """[(name, rgb)] the prompt names, in the order it names them: colour words first, then scene words; at most
    MAX_SWATCHES, no name twice. [] when the prompt names no colour and no scene."""
    words = [w.lower() for w in _WORD.findall(prompt)]
    named = [(w, NAMED_COLOURS[w]) for w in words if w in NAMED_COLOURS]
    scene = [SCENE_COLOURS[w] for w in words if w in SCENE_COLOURS]
    out: list[tuple[str, tuple[int, int, int]]] = []
    for name, rgb in named + scene:
        if name not in {n for n, _ in out} and rgb not in {c for _, c in out}:
            out.append((name, rgb))
    return out[:MAX_SWATCHES]


def palette_for(prompt: str) -> list[tuple[int, int, int]]:
    """Colours for the prompt (at least three): the colours it names (named_palette), then colours derived from its
    words; the same words always give the same palette."""
    words = [w.lower() for w in _WORD.findall(prompt)] or [prompt or "empty"]
    colours = [rgb for _, rgb in named_palette(prompt)]
    if not colours:
        colours = [_color(w, lightness=0.35 + (_hash_int("l:" + w) % 30) / 100.0) for w in words[:12]]
    while len(colours) < 3:
        base = colours[len(colours) % len(colours)] if colours else (120, 120, 140)
        h, lum, sat = colorsys.rgb_to_hls(*(c / 255 for c in base))
        r, g, b = colorsys.hls_to_rgb(h, min(0.92, lum + 0.25) if lum < 0.6 else lum - 0.3, sat)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
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
    """The labelled preview of `prompt` (PNG bytes, width × height): backdrop, the prompt's words, its palette and an
    "OFFLINE PREVIEW" band. Same arguments, same bytes."""
    return _encode(_label(_render(prompt, seed, width, height), prompt, seed))


def _render(prompt: str, seed: int, width: int, height: int) -> Image.Image:
    """The backdrop: a gradient between the palette's last two colours and soft shapes in all of them."""
    words = [w.lower() for w in _WORD.findall(prompt)] or ["empty"]
    palette = palette_for(prompt)
    rng = random.Random(_hash_int(f"{seed}\x00{prompt}"))

    gradient = Image.linear_gradient("L").resize((width, height))
    # Sky to ground: the last two colours (scene words come after colour words), so the named ones stand out on it.
    image = ImageOps.colorize(gradient, black=palette[-1], white=palette[-2]).convert("RGBA")

    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    scale = min(width, height)
    shapes = min(6 + 3 * len(words), 48)
    for i in range(shapes):
        word = words[i % len(words)]
        r, g, b = palette[i % len(palette)]
        alpha = 70 + rng.randrange(100)
        cx, cy = rng.randrange(width), rng.randrange(height)
        radius = max(4, int(scale * (0.03 + rng.random() * 0.18)))
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        kind = _hash_int("shape:" + word) % 4
        fill = (r, g, b, alpha)
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rounded_rectangle(box, radius=radius // 3, fill=fill)
        elif kind == 2:
            sides = 3 + _hash_int("sides:" + word) % 5
            draw.regular_polygon((cx, cy, radius), n_sides=sides, rotation=rng.randrange(360), fill=fill)
        else:
            x2, y2 = rng.randrange(width), rng.randrange(height)
            draw.line((cx, cy, x2, y2), fill=fill, width=max(2, radius // 4))
    return Image.alpha_composite(image, overlay.filter(ImageFilter.GaussianBlur(radius=scale / 200)))


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(8, size))


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, max_width: float, max_lines: int) -> list[str]:
    """`text` broken into lines no wider than max_width px (a word longer than a line is cut), at most max_lines;
    the last line ends with "…" when text was left out."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        while draw.textlength(word, font=font) > max_width and len(word) > 1:
            word = word[:-1]
        candidate = f"{line} {word}".strip()
        if draw.textlength(candidate, font=font) <= max_width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = word
    if line:
        lines.append(line)
    if len(lines) <= max_lines:
        return lines
    lines = lines[:max_lines]
    last = lines[-1]
    while last and draw.textlength(last + " …", font=font) > max_width:
        last = last[:-1]
    lines[-1] = last.rstrip() + " …"
    return lines


def _ink(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on `rgb` (relative luminance, WCAG 2.x)."""
    lum = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    return (20, 20, 28) if lum > 150 else (255, 255, 255)


def _label(image: Image.Image, prompt: str, seed: int) -> Image.Image:
    """Over the backdrop: an "OFFLINE PREVIEW" band on top, the prompt in a panel, the named palette as swatches."""
    width, height = image.size
    scale = min(width, height)
    pad = max(6, scale // 32)
    draw = ImageDraw.Draw(image, "RGBA")

    band_font = _font(scale // 22)
    band_h = int(band_font.size * 1.9)
    draw.rectangle((0, 0, width, band_h), fill=(17, 24, 39, 225))
    draw.text((pad, band_h // 2), "OFFLINE PREVIEW", font=band_font, fill=(255, 255, 255), anchor="lm")
    tag = f"local-preview · seed {seed}"
    if draw.textlength("OFFLINE PREVIEW", font=band_font) + draw.textlength(tag, font=band_font) + 3 * pad < width:
        draw.text((width - pad, band_h // 2), tag, font=band_font, fill=(165, 180, 252), anchor="rm")

    swatches = named_palette(prompt) or [("", rgb) for rgb in palette_for(prompt)[:3]]
    swatch_font = _font(scale // 30)
    swatch_h = int(swatch_font.size * 2.2)
    top = height - swatch_h
    step = width / len(swatches)
    for i, (name, rgb) in enumerate(swatches):
        x0, x1 = round(i * step), round((i + 1) * step)
        draw.rectangle((x0, top, x1, height), fill=rgb)
        if name and draw.textlength(name, font=swatch_font) < (x1 - x0) - pad:
            draw.text(((x0 + x1) // 2, top + swatch_h // 2), name, font=swatch_font, fill=_ink(rgb), anchor="mm")

    text = " ".join(prompt.split()) or "(empty prompt)"
    text_font = _font(scale // 14)
    panel_w = width - 4 * pad
    line_h = int(text_font.size * 1.3)
    room = top - band_h - 6 * pad
    lines = _wrap(draw, text, text_font, panel_w - 2 * pad, max(1, min(6, room // line_h)))
    panel_h = len(lines) * line_h + 2 * pad
    y0 = band_h + (top - band_h - panel_h) // 2
    draw.rounded_rectangle((2 * pad, y0, width - 2 * pad, y0 + panel_h), radius=pad, fill=(255, 255, 255, 205))
    for i, line in enumerate(lines):
        draw.text((width // 2, y0 + pad + i * line_h + line_h // 2), line, font=text_font, fill=(20, 20, 28),
                  anchor="mm")
    return image


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
