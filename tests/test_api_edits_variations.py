"""POST /v1/images/edits and /v1/images/variations (multipart), with the official SDK, served offline by
local-preview."""
import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from billing.models import LedgerEntry
from tests.images_util import jpeg, mask, png, size_of


def _b64png(item) -> bytes:
    data = base64.b64decode(item.b64_json)
    assert data[:4] == b"\x89PNG"
    return data


def test_edit_with_one_image_and_a_mask(openai_client, api_key):
    result = openai_client.images.edit(
        model="local-preview", image=("in.png", png(), "image/png"), mask=("mask.png", mask(), "image/png"),
        prompt="add a sun", size="256x256", response_format="b64_json", n=2,
    )
    assert len(result.data) == 2
    first = Image.open(io.BytesIO(_b64png(result.data[0]))).convert("RGB")
    assert first.size == (256, 256)
    # The opaque (kept) right half still shows the input's red; the transparent left half was painted.
    assert first.getpixel((250, 128))[0] > 150
    assert result.data[0].revised_prompt == "add a sun"
    row = LedgerEntry.objects.for_organization(api_key[0].organization).get()
    assert (row.endpoint, row.status, row.n, row.cost_micros) == ("edits", "succeeded", 2, 2000)


def test_edit_with_several_images_as_image_array(openai_client):
    result = openai_client.images.edit(
        model="local-preview", prompt="combine", size="512x512", response_format="b64_json",
        image=[("a.png", png(), "image/png"), ("b.jpg", jpeg(80, 40), "image/jpeg")],
    )
    assert size_of(_b64png(result.data[0])) == (512, 512)


def test_edit_url_response(openai_client):
    result = openai_client.images.edit(model="local-preview", image=("in.png", png(), "image/png"),
                                       prompt="x", size="256x256")
    assert httpx.get(result.data[0].url).content[:4] == b"\x89PNG"


def test_variation(openai_client, api_key):
    result = openai_client.images.create_variation(model="local-preview", image=("in.png", png(), "image/png"),
                                                   n=3, size="256x256", response_format="b64_json")
    datas = [_b64png(item) for item in result.data]
    assert len(set(datas)) == 3
    assert all(item.revised_prompt is None for item in result.data)
    row = LedgerEntry.objects.for_organization(api_key[0].organization).get()
    assert (row.endpoint, row.n, row.cost_micros) == ("variations", 3, 3000)


def test_scalars_arrive_as_strings_and_are_converted(live_url, api_key):
    response = httpx.post(f"{live_url}/v1/images/variations", headers={"Authorization": f"Bearer {api_key[1]}"},
                          files={"image": ("in.png", png(), "image/png")},
                          data={"model": "local-preview", "n": "2", "size": "256x256", "response_format": "b64_json"})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2
    bad = httpx.post(f"{live_url}/v1/images/variations", headers={"Authorization": f"Bearer {api_key[1]}"},
                     files={"image": ("in.png", png(), "image/png")}, data={"model": "local-preview", "n": "two"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "n"


def test_file_type_is_checked_by_content_not_name(openai_client):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.create_variation(model="local-preview",
                                              image=("in.png", b"<html>not an image</html>", "image/png"))
    assert info.value.param == "image" and info.value.code == "invalid_image_format"
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.create_variation(model="local-preview", image=("in.png", gif.getvalue(), "image/png"))
    assert info.value.code == "invalid_image_format" and "PNG, JPEG, WEBP" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.create_variation(model="local-preview",
                                              image=("in.png", png()[:40], "image/png"))  # truncated PNG
    assert info.value.param == "image" and info.value.code == "invalid_image"


def test_missing_image_and_missing_prompt(openai_client, live_url, api_key):
    response = httpx.post(f"{live_url}/v1/images/edits", headers={"Authorization": f"Bearer {api_key[1]}"},
                          data={"prompt": "x", "model": "local-preview"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "image"
    assert response.json()["error"]["code"] == "missing_required_parameter"
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.edit(model="local-preview", image=("in.png", png(), "image/png"), prompt="")
    assert info.value.param == "prompt"


def test_mask_must_match_the_image_size(openai_client):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.edit(model="local-preview", image=("in.png", png(64, 64), "image/png"),
                                  mask=("m.png", mask(32, 32), "image/png"), prompt="x")
    assert info.value.param == "mask" and "same size" in info.value.message


def test_mask_needs_alpha(openai_client):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.edit(model="local-preview", image=("in.png", png(), "image/png"),
                                  mask=("m.png", png(mode="RGB"), "image/png"), prompt="x")
    assert info.value.param == "mask" and info.value.code == "invalid_mask"


def test_too_many_input_images(openai_client):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.edit(model="local-preview", prompt="x",
                                  image=[(f"{i}.png", png(), "image/png") for i in range(5)])
    assert "at most 4" in info.value.message


def test_variations_refuse_a_prompt(openai_client):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.create_variation(model="local-preview", image=("in.png", png(), "image/png"),
                                              extra_body={"prompt": "nope"})
    assert info.value.code == "unknown_parameter" and info.value.param == "prompt"


def test_json_to_a_multipart_endpoint_is_415(live_url, api_key):
    response = httpx.post(f"{live_url}/v1/images/edits", headers={"Authorization": f"Bearer {api_key[1]}"},
                          json={"prompt": "x"})
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
