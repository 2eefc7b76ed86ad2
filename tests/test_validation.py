"""Validation against the model catalog, per model (pure functions: no database, no server)."""
import asyncio

import pytest

from generation import catalog
from generation.errors import InvalidRequest, ModelNotFound
from generation.pipeline import input_images as _images
from generation.pipeline.validation import validate
from tests.images_util import jpeg, png


def inspect(data, *, param):
    """An input image checked and decoded as the endpoints do (generation/pipeline/input_images.py)."""
    return asyncio.run(_images.inspect(data, param=param))


def err(endpoint, data, **kw) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        validate(endpoint, data, **kw)
    return info.value


def test_defaults_per_model():
    for model, size, quality, style, fmt in [
        ("local-preview", "1024x1024", "standard", None, "url"),
        ("dall-e-2", "1024x1024", "standard", None, "url"),
        ("dall-e-3", "1024x1024", "standard", "vivid", "url"),
        ("gpt-image-1", "auto", "auto", None, "b64_json"),
    ]:
        call = validate("generations", {"prompt": "x", "model": model})
        assert (call.request.size, call.request.quality, call.request.style, call.response_format) == (
            size, quality, style, fmt), model
        assert call.request.n == 1


def test_omitted_and_explicit_null_are_the_same():
    nulls = {k: None for k in ["n", "size", "quality", "style", "response_format", "user", "provider", "image", "seed",
                               "background", "moderation", "output_format", "output_compression"]}
    for model in ["local-preview", "dall-e-3", "gpt-image-1"]:
        a = validate("generations", {"prompt": "x", "model": model})
        b = validate("generations", {"prompt": "x", "model": model, **nulls})
        assert a == b
    assert validate("generations", {"prompt": "x", "model": None}).spec.id == catalog.DEFAULT_MODEL


def test_unknown_field_is_refused_with_param():
    e = err("generations", {"prompt": "x", "colour": "red"})
    assert (e.code, e.param, e.status) == ("unknown_parameter", "colour", 400)


def test_product_extras_are_accepted():
    call = validate("generations", {"prompt": "x", "model": "dall-e-2", "provider": "openai",
                                    "image": "https://example.com/cat.png"})
    assert call.provider == "openai" and call.image_url == "https://example.com/cat.png"
    assert call.request.mode == "edit"


@pytest.mark.parametrize("model,size,allowed", [
    ("dall-e-2", "1792x1024", "256x256, 512x512, 1024x1024"),
    ("dall-e-3", "512x512", "1024x1024, 1792x1024, 1024x1792"),
    ("gpt-image-1", "1792x1024", "1024x1024, 1536x1024, 1024x1536, auto"),
])
def test_sizes_per_model_name_the_allowed_values(model, size, allowed):
    e = err("generations", {"prompt": "x", "model": model, "size": size})
    assert e.param == "size" and e.code == "invalid_size" and allowed in e.message


def test_quality_and_style_per_model():
    assert validate("generations", {"prompt": "x", "model": "dall-e-3", "quality": "hd", "style": "natural"})
    e = err("generations", {"prompt": "x", "model": "dall-e-3", "quality": "high"})
    assert e.param == "quality" and "standard, hd" in e.message
    e = err("generations", {"prompt": "x", "model": "dall-e-2", "style": "vivid"})
    assert e.param == "style" and "dall-e-3" in e.message
    e = err("generations", {"prompt": "x", "model": "gpt-image-1", "quality": "hd"})
    assert "low, medium, high, auto" in e.message


@pytest.mark.parametrize("model,limit", [("dall-e-2", 1000), ("dall-e-3", 4000), ("gpt-image-1", 32000),
                                         ("local-preview", 4000)])
def test_prompt_length_per_model(model, limit):
    assert validate("generations", {"prompt": "a" * limit, "model": model})
    e = err("generations", {"prompt": "a" * (limit + 1), "model": model})
    assert e.param == "prompt" and e.code == "string_above_max_length" and str(limit) in e.message


def test_n_limits_and_types():
    assert validate("generations", {"prompt": "x", "model": "dall-e-3", "n": 4}).request.n == 4  # parallel calls
    for bad in [0, 11, -1]:
        assert err("generations", {"prompt": "x", "n": bad}).param == "n"
    for bad in ["2", 1.5, True]:
        e = err("generations", {"prompt": "x", "n": bad})
        assert e.param == "n" and e.code == "invalid_type"


def test_response_format_dall_e_and_gpt_image():
    assert validate("generations", {"prompt": "x", "model": "dall-e-2", "response_format": "b64_json"})
    e = err("generations", {"prompt": "x", "model": "dall-e-2", "response_format": "png"})
    assert "url, b64_json" in e.message
    e = err("generations", {"prompt": "x", "model": "gpt-image-1", "response_format": "url"})
    assert (e.code, e.param) == ("unknown_parameter", "response_format")


def test_gpt_image_fields():
    call = validate("generations", {"prompt": "x", "model": "gpt-image-1", "background": "transparent",
                                    "output_format": "webp", "output_compression": 50, "moderation": "low"})
    assert call.request.options == {"background": "transparent", "moderation": "low", "output_format": "webp",
                                    "output_compression": 50}
    assert err("generations", {"prompt": "x", "model": "gpt-image-1", "output_compression": 101}).param == \
        "output_compression"
    assert err("generations", {"prompt": "x", "model": "gpt-image-1", "output_compression": 50}).param == \
        "output_compression"  # png cannot be compressed below 100
    assert err("generations", {"prompt": "x", "model": "gpt-image-1", "background": "transparent",
                               "output_format": "jpeg"}).param == "background"
    assert "png, jpeg, webp" in err("generations", {"prompt": "x", "model": "gpt-image-1",
                                                    "output_format": "gif"}).message
    for field, value in [("background", "opaque"), ("output_format", "png"), ("moderation", "low"),
                         ("output_compression", 80)]:
        e = err("generations", {"prompt": "x", "model": "dall-e-3", field: value})
        assert e.param == field and "gpt-image-1" in e.message


def test_types_are_checked():
    e = err("generations", {"prompt": 5})
    assert (e.param, e.code) == ("prompt", "invalid_type")
    assert err("generations", {"prompt": "x", "size": 1024}).code == "invalid_type"
    assert err("generations", ["not", "an", "object"]).code == "invalid_json"


def test_image_url_not_for_dall_e_3():
    e = err("generations", {"prompt": "x", "model": "dall-e-3", "image": "https://example.com/a.png"})
    assert e.param == "image" and "dall-e-3" in e.message


def test_unknown_or_unavailable_model_is_404():
    with pytest.raises(ModelNotFound):
        validate("generations", {"prompt": "x", "model": "dall-e-9"})
    with pytest.raises(ModelNotFound):
        validate("generations", {"prompt": "x", "model": "dall-e-3"}, is_available=lambda spec: spec.id != "dall-e-3")


def test_capabilities_per_endpoint():
    square = {"image": [inspect(png(), param="image")]}
    assert validate("variations", {"model": "dall-e-2"}, files=square, form=True)
    e = err("variations", {"model": "dall-e-3"}, files=square, form=True)
    assert e.param == "model" and "dall-e-2" in e.message
    e = err("variations", {"model": "gpt-image-1"}, files=square, form=True)
    assert e.param == "model"


def test_dall_e_2_needs_a_square_png_under_4mb():
    wide = {"image": [inspect(png(80, 40), param="image")]}
    e = err("edits", {"prompt": "x", "model": "dall-e-2"}, files=wide, form=True)
    assert e.code == "invalid_image_dimensions" and "80x40" in e.message
    jpg = {"image": [inspect(jpeg(), param="image")]}
    e = err("edits", {"prompt": "x", "model": "dall-e-2"}, files=jpg, form=True)
    assert e.code == "invalid_image_format" and "PNG" in e.message
    assert validate("edits", {"prompt": "x", "model": "gpt-image-1"}, files=jpg, form=True)


def test_form_scalars_are_strings():
    files = {"image": [inspect(png(), param="image")]}
    call = validate("edits", {"prompt": "x", "model": "local-preview", "n": "3", "seed": "42"}, files=files,
                    form=True)
    assert (call.request.n, call.request.seed) == (3, 42)
    assert err("edits", {"prompt": "x", "n": "3.5"}, files=files, form=True).code == "invalid_type"


def test_every_catalog_model_size_and_quality_has_a_nonzero_price():
    """Never $0 by accident: the price list covers the whole catalog (gpt-image `auto` resolves before pricing)."""
    from billing.price_list import PRICE_LIST

    priced = {(m, s, q) for m, s, q, micros, _ in PRICE_LIST if micros > 0}
    missing = [(spec.id, size, quality)
               for spec in catalog.MODELS.values()
               for size in spec.sizes if size != "auto"
               for quality in spec.qualities if quality != "auto"
               if (spec.id, size, quality) not in priced]
    assert missing == []
