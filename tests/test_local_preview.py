"""local-preview draws a labelled preview of the prompt (issue 15, item 4): the prompt's named colours as the
palette, its words and "OFFLINE PREVIEW" on the image, the same bytes for the same prompt and seed. Through the API
with the official SDK, and the renderer itself."""
import base64
import io

from PIL import Image

from generation.providers.local import named_palette, palette_for, render_png


def _near(pixel, rgb, tolerance=12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], rgb, strict=True))


def test_the_palette_comes_from_the_colours_and_scenes_the_prompt_names():
    assert [name for name, _ in named_palette("a red fox in a snowy forest")] == [
        "red", "fox orange", "snow white", "forest green"]
    assert [name for name, _ in named_palette("Blue and GOLD, blue again")] == ["blue", "gold"]
    assert named_palette("an abstract idea") == [] and len(palette_for("an abstract idea")) >= 3


def test_the_image_carries_the_palette_swatches_and_a_dark_offline_preview_band():
    image = Image.open(io.BytesIO(render_png("a red fox in a snowy forest", 7, 512, 512))).convert("RGB")
    swatches = named_palette("a red fox in a snowy forest")
    # The bottom strip: one swatch per named colour, left to right (sampled off-centre, clear of the name).
    for i, (_, rgb) in enumerate(swatches):
        x = int((i + 0.1) * 512 / len(swatches))
        assert _near(image.getpixel((x, 506)), rgb), (i, image.getpixel((x, 506)), rgb)
    # The band at the top is dark, with light text in it (the label).
    band = [image.getpixel((x, y)) for x in range(0, 256) for y in range(2, 30)]
    assert sum(1 for p in band if max(p) < 60) > len(band) // 2
    assert any(min(p) > 200 for p in band)
    # The prompt panel in the middle is mostly white, with dark text.
    panel = [image.getpixel((x, y)) for x in range(60, 450, 2) for y in range(210, 310, 2)]
    assert any(max(p) < 80 for p in panel) and sum(1 for p in panel if min(p) > 220) > len(panel) // 3


def test_same_prompt_and_seed_same_bytes_at_every_size():
    for size in ((256, 256), (1024, 1792), (1792, 1024)):
        first = render_png("A lighthouse in a storm " * 30, 3, *size)
        assert first == render_png("A lighthouse in a storm " * 30, 3, *size)
        assert first != render_png("A lighthouse in a storm " * 30, 4, *size)
        assert Image.open(io.BytesIO(first)).size == size


def test_through_the_api_the_preview_is_labelled_and_deterministic(openai_client):
    def one(seed):
        result = openai_client.images.generate(model="local-preview", prompt="a red fox in a snowy forest",
                                               size="512x512", response_format="b64_json", extra_body={"seed": seed})
        return base64.b64decode(result.data[0].b64_json)

    assert one(11) == one(11) == render_png("a red fox in a snowy forest", 11, 512, 512)
