"""BedrockProvider against the Bedrock Runtime emulator, through REAL boto3 (endpoint_url = the emulator).

No database, no mocks: every call goes over loopback HTTP, SigV4-signed by botocore, and every error is parsed by
botocore from the emulator's wire format.
"""
import asyncio
import base64
import io
import json
import time

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from generation.providers import base as pb
from generation.providers.bedrock import TITAN_SIZES, BedrockProvider
from tests import images_util
from tests.emulators import bedrock as emu
from tests.emulators.base import Fault, free_port


@pytest.fixture(scope="module")
def bedrock():
    with emu.emulator() as em:
        yield em


@pytest.fixture(autouse=True)
def _clean(bedrock):
    bedrock.reset()
    yield
    bedrock.reset()


def make_provider(url: str, **kwargs) -> BedrockProvider:
    options = dict(region="us-east-1", endpoint_url=url, aws_access_key_id=emu.ACCESS_KEY,
                   aws_secret_access_key=emu.SECRET_KEY, timeout=5.0, max_workers=8)
    options.update(kwargs)
    return BedrockProvider(**options)


@pytest.fixture(scope="module")
def provider(bedrock):
    p = make_provider(bedrock.url)
    yield p
    p.close()


def req(**kwargs) -> pb.ImageRequest:
    options = dict(model="titan-image-generator-v2", prompt="a lighthouse at dusk", n=1, size="1024x1024",
                   quality="standard")
    options.update(kwargs)
    return pb.ImageRequest(**options)


def run(provider, request):
    return asyncio.run(provider.run(request))


def last_body(em) -> dict:
    return json.loads(em.requests[-1].body)


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def input_image(data: bytes, content_type="image/png") -> pb.InputImage:
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
    return pb.InputImage(data=data, content_type=content_type, width=w, height=h)


def rgba_mask(width: int, height: int, transparent_box: tuple[int, int, int, int]) -> bytes:
    """OpenAI convention: opaque everywhere, alpha 0 (the area to edit) inside `transparent_box`."""
    img = Image.new("RGBA", (width, height), (10, 10, 10, 255))
    img.paste((0, 0, 0, 0), transparent_box)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


# --- serving and the request body ------------------------------------------------------------------------------------

def test_name_and_models(provider):
    assert provider.name == "bedrock"
    assert provider.serves() == {"titan-image-generator-v1", "titan-image-generator-v2", "nova-canvas"}


@pytest.mark.parametrize("model, model_id, cfg", [
    ("titan-image-generator-v1", "amazon.titan-image-generator-v1", 8.0),
    ("titan-image-generator-v2", "amazon.titan-image-generator-v2:0", 8.0),
    ("nova-canvas", "amazon.nova-canvas-v1:0", 6.5),
])
def test_text_image_happy_path_exact_body(bedrock, provider, model, model_id, cfg):
    result = run(provider, req(model=model, prompt="a red fox in snow", seed=7))

    assert len(result.images) == 1
    image = result.images[0]
    assert image.content_type == "image/png" and image.data.startswith(b"\x89PNG") and image.revised_prompt is None
    sent = bedrock.requests[-1]
    assert sent.method == "POST" and sent.path == f"/model/{model_id}/invoke"
    assert sent.headers["content-type"] == "application/json" and sent.headers["accept"] == "application/json"
    assert sent.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={emu.ACCESS_KEY}/")
    assert json.loads(sent.body) == {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": "a red fox in snow"},
        "imageGenerationConfig": {"numberOfImages": 1, "height": 1024, "width": 1024, "cfgScale": cfg, "seed": 7,
                                  "quality": "standard"},
    }


def test_size_quality_and_n_mapping(bedrock, provider):
    result = run(provider, req(n=5, size="1152x896", quality="premium", seed=1))

    config = last_body(bedrock)["imageGenerationConfig"]
    assert (config["numberOfImages"], config["width"], config["height"], config["quality"]) == (5, 1152, 896,
                                                                                              "premium")
    assert len(result.images) == 5
    assert len({img.data for img in result.images}) == 5
    assert result.upstream_cost_micros == 5 * 12_000


@pytest.mark.parametrize("size", ["768x1408", "512x512", "1280x768"])
def test_portrait_and_landscape_sizes_map_width_and_height(bedrock, provider, size):
    run(provider, req(model="nova-canvas", size=size, seed=3))
    config = last_body(bedrock)["imageGenerationConfig"]
    assert f"{config['width']}x{config['height']}" == size


def test_given_seed_is_sent_and_reproducible(bedrock, provider):
    first = run(provider, req(seed=1234, n=2))
    second = run(provider, req(seed=1234, n=2))
    other = run(provider, req(seed=1235, n=2))
    assert [b["imageGenerationConfig"]["seed"] for b in map(lambda r: json.loads(r.body), bedrock.requests)] == [
        1234, 1234, 1235]
    assert [i.data for i in first.images] == [i.data for i in second.images]
    assert first.images[0].data != other.images[0].data


def test_seed_beyond_model_range_is_folded_into_it(bedrock, provider):
    top = 2**32 - 1  # the gateway accepts up to this (and adds offsets for parallel calls)
    run(provider, req(seed=top))
    assert last_body(bedrock)["imageGenerationConfig"]["seed"] == top % 2_147_483_647
    run(provider, req(model="nova-canvas", seed=top))
    assert last_body(bedrock)["imageGenerationConfig"]["seed"] == top % 858_993_460


def test_no_seed_gets_a_fresh_random_one_per_call(bedrock, provider):
    # Bedrock's default seed is fixed: omitting it would make identical requests return identical pictures.
    run(provider, req())
    run(provider, req())
    seeds = [json.loads(r.body)["imageGenerationConfig"]["seed"] for r in bedrock.requests]
    assert all(0 <= s <= 2_147_483_646 for s in seeds)
    assert seeds[0] != seeds[1]


# --- costs -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, size, quality, n, micros", [
    ("titan-image-generator-v1", "512x512", "standard", 1, 8_000),
    ("titan-image-generator-v1", "768x768", "standard", 1, 10_000),
    ("titan-image-generator-v2", "512x512", "premium", 1, 10_000),
    ("titan-image-generator-v2", "1024x1024", "premium", 3, 36_000),
    ("titan-image-generator-v2", "1408x768", "standard", 5, 50_000),
    ("nova-canvas", "1024x1024", "standard", 1, 40_000),
    ("nova-canvas", "1152x896", "standard", 1, 40_000),  # 1,032,192 pixels: still "up to 1024x1024"
    ("nova-canvas", "1408x768", "standard", 2, 120_000),  # 1,081,344 pixels: above
    ("nova-canvas", "512x512", "premium", 1, 60_000),
    ("nova-canvas", "1280x768", "premium", 4, 240_000),  # 983,040 pixels
    ("nova-canvas", "1408x768", "premium", 1, 80_000),
])
def test_upstream_cost(provider, model, size, quality, n, micros):
    assert provider.upstream_cost_micros(req(model=model, size=size, quality=quality, n=n)) == micros


def test_every_catalog_combination_has_a_nonzero_cost(provider):
    from generation import catalog

    for model in provider.serves():
        spec = catalog.get_model(model)
        for size in spec.sizes:
            for quality in spec.qualities:
                assert provider.upstream_cost_micros(req(model=model, size=size, quality=quality)) > 0


def test_result_reports_the_call_cost(provider):
    result = run(provider, req(model="nova-canvas", n=2, size="1024x1024", quality="premium"))
    assert result.upstream_cost_micros == 120_000


# --- refusing what the models cannot do (nothing sent) ---------------------------------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    (dict(size="1792x1024"), ["1792x1024", "1024x1024", "1408x768"]),
    (dict(model="nova-canvas", size="1000x1000"), ["1000x1000", "divisible by 16"]),
    (dict(quality="hd"), ["hd", "standard", "premium"]),
    (dict(n=6), ["n=6", "1 to 5"]),
    (dict(model="dall-e-3"), ["dall-e-3", "nova-canvas"]),
    (dict(mode="outpaint"), ["outpaint"]),
    (dict(mode="variation", prompt=""), ["input image"]),
])
def test_unsupported_requests_are_refused_locally(bedrock, provider, kwargs, words):
    with pytest.raises(pb.UpstreamInvalidRequest) as info:
        run(provider, req(**kwargs))
    assert info.value.provider == "bedrock" and not info.value.retryable
    for word in words:
        assert word in info.value.message
    assert bedrock.requests == []


def test_titan_v1_takes_one_variation_image(bedrock, provider):
    two = (input_image(images_util.png()), input_image(images_util.png()))
    with pytest.raises(pb.UpstreamInvalidRequest, match="at most 1"):
        run(provider, req(model="titan-image-generator-v1", mode="variation", prompt="", images=two))
    assert bedrock.requests == []


# --- variation, image-to-image and inpainting ------------------------------------------------------------------------

def test_variation_is_image_variation_without_text(bedrock, provider):
    source = input_image(images_util.jpeg(300, 200), "image/jpeg")
    result = run(provider, req(mode="variation", prompt="", images=(source,), size="768x768", seed=9, n=2))

    body = last_body(bedrock)
    assert body["taskType"] == "IMAGE_VARIATION"
    params = body["imageVariationParams"]
    assert set(params) == {"images"} and len(params["images"]) == 1
    sent = decode(params["images"][0])
    assert sent.format == "PNG" and sent.mode == "RGB" and sent.size == (768, 768)
    assert body["imageGenerationConfig"] == {"numberOfImages": 2, "height": 768, "width": 768, "cfgScale": 8.0,
                                             "seed": 9, "quality": "standard"}
    assert len(result.images) == 2


def test_edit_without_mask_is_image_variation_guided_by_the_prompt(bedrock, provider):
    source = input_image(images_util.png(128, 128, color=(0, 0, 255, 0)))  # fully transparent: flattened on white
    run(provider, req(model="nova-canvas", mode="edit", prompt="make it autumn", images=(source,)))

    body = last_body(bedrock)
    assert body["taskType"] == "IMAGE_VARIATION"
    assert body["imageVariationParams"]["text"] == "make it autumn"
    sent = decode(body["imageVariationParams"]["images"][0])
    assert sent.mode == "RGB" and sent.size == (1024, 1024) and sent.getpixel((5, 5)) == (255, 255, 255)


def test_edit_with_mask_is_inpainting_with_bedrock_mask_convention(bedrock, provider):
    # OpenAI: alpha 0 = edit. Bedrock maskImage: black (0 0 0) = inside the mask = edit; white = keep.
    image = input_image(images_util.png(64, 64))
    mask = input_image(images_util.mask(64, 64))  # transparent left half
    result = run(provider, req(mode="edit", prompt="a window", images=(image,), mask=mask, size="512x512", seed=2))

    body = last_body(bedrock)
    assert body["taskType"] == "INPAINTING"
    params = body["inPaintingParams"]
    assert set(params) == {"image", "maskImage", "text"} and params["text"] == "a window"
    assert body["imageGenerationConfig"] == {"numberOfImages": 1, "height": 512, "width": 512, "cfgScale": 8.0,
                                             "seed": 2, "quality": "standard"}
    sent_image, sent_mask = decode(params["image"]), decode(params["maskImage"])
    assert sent_image.size == sent_mask.size == (512, 512) and sent_image.mode == "RGB"
    assert sent_mask.getpixel((10, 256)) == (0, 0, 0)  # left: was transparent -> edit
    assert sent_mask.getpixel((500, 256)) == (255, 255, 255)  # right: was opaque -> keep
    assert {c for _, c in sent_mask.getcolors()} == {(0, 0, 0), (255, 255, 255)}
    assert len(result.images) == 1


def test_inpainting_mask_stays_aligned_when_the_image_is_cropped_to_size(bedrock, provider):
    # 200x100 fitted to 1024x1024 keeps the middle 100x100 (x 50..150); transparent x < 100 -> left half of the crop.
    image = input_image(images_util.png(200, 100))
    mask = input_image(rgba_mask(200, 100, (0, 0, 100, 100)))
    run(provider, req(model="nova-canvas", mode="edit", prompt="x", images=(image,), mask=mask))

    sent_mask = decode(last_body(bedrock)["inPaintingParams"]["maskImage"])
    assert sent_mask.size == (1024, 1024)
    assert sent_mask.getpixel((400, 500)) == (0, 0, 0)
    assert sent_mask.getpixel((620, 500)) == (255, 255, 255)


def test_partially_transparent_mask_pixels_are_kept(bedrock, provider):
    # Only alpha 0 means "edit" in OpenAI's convention; semi-transparent pixels stay.
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 128))
    img.paste((0, 0, 0, 0), (0, 0, 16, 64))
    out = io.BytesIO()
    img.save(out, format="PNG")
    run(provider, req(mode="edit", prompt="x", images=(input_image(images_util.png()),),
                      mask=input_image(out.getvalue()), size="512x512"))
    sent_mask = decode(last_body(bedrock)["inPaintingParams"]["maskImage"])
    assert sent_mask.getpixel((20, 20)) == (0, 0, 0) and sent_mask.getpixel((300, 20)) == (255, 255, 255)


def test_unreadable_input_image_is_an_invalid_request(bedrock, provider):
    broken = pb.InputImage(data=b"not an image", content_type="image/png", width=64, height=64)
    with pytest.raises(pb.UpstreamInvalidRequest, match="could not be read"):
        run(provider, req(mode="variation", prompt="", images=(broken,)))
    assert bedrock.requests == []


# --- error mapping ---------------------------------------------------------------------------------------------------

def test_content_filter_refusal(bedrock, provider):
    with pytest.raises(pb.ContentRefused) as info:
        run(provider, req(prompt="a forbidden-upstream thing"))
    assert emu.CONTENT_FILTER_MESSAGE in info.value.message
    assert info.value.provider == "bedrock" and not info.value.retryable


def test_injected_refusal_on_an_edit(bedrock, provider):
    bedrock.faults.set("invoke", Fault(kind="refuse"))
    with pytest.raises(pb.ContentRefused, match="content filters"):
        run(provider, req(mode="variation", prompt="", images=(input_image(images_util.png()),)))


def test_validation_error_carries_bedrocks_reason(bedrock, provider):
    with pytest.raises(pb.UpstreamInvalidRequest) as info:
        run(provider, req(model="titan-image-generator-v1", prompt="x" * 600))
    assert "ValidationException" in info.value.message and "maxLength: 512" in info.value.message
    assert not info.value.retryable


@pytest.mark.parametrize("name, cls, retryable", [
    ("ThrottlingException", pb.UpstreamRateLimited, True),
    ("ServiceQuotaExceededException", pb.UpstreamRateLimited, True),
    ("ModelTimeoutException", pb.UpstreamTimeout, True),
    ("InternalServerException", pb.UpstreamUnavailable, True),
    ("ServiceUnavailableException", pb.UpstreamUnavailable, True),
    ("ModelErrorException", pb.UpstreamUnavailable, True),
    ("ModelNotReadyException", pb.UpstreamUnavailable, True),
    ("ResourceNotFoundException", pb.UpstreamUnavailable, True),
    ("AccessDeniedException", pb.UpstreamUnavailable, True),
])
def test_aws_errors_map_to_provider_errors(bedrock, provider, name, cls, retryable):
    bedrock.faults.set("invoke", emu.aws_error(name, f"upstream says {name}"))
    with pytest.raises(pb.ProviderError) as info:
        run(provider, req())
    assert type(info.value) is cls and info.value.retryable is retryable
    assert info.value.provider == "bedrock"
    assert name in info.value.message and f"upstream says {name}" in info.value.message
    if name == "AccessDeniedException":
        assert "credentials" in info.value.message
    assert len(bedrock.requests) == 1  # no retries inside: the gateway's router fails over


def test_wrong_credentials_are_our_misconfiguration(bedrock):
    p = make_provider(bedrock.url, aws_access_key_id="AKIAWRONGWRONGWRONG0")
    try:
        with pytest.raises(pb.UpstreamUnavailable) as info:
            run(p, req())
    finally:
        p.close()
    assert "credentials" in info.value.message
    assert "UnrecognizedClientException" in info.value.message
    assert "The security token included in the request is invalid." in info.value.message


def test_read_timeout(bedrock):
    p = make_provider(bedrock.url, timeout=0.4)
    bedrock.faults.set("invoke", Fault(delay=1.5, times=1))
    started = time.monotonic()
    try:
        with pytest.raises(pb.UpstreamTimeout) as info:
            run(p, req())
    finally:
        p.close()
    assert time.monotonic() - started < 1.4
    assert info.value.retryable and info.value.provider == "bedrock"


def test_connection_refused():
    p = make_provider(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(pb.UpstreamUnavailable, match="connect") as info:
            run(p, req())
    finally:
        p.close()
    assert info.value.retryable


@pytest.mark.parametrize("kind, words", [
    ("malformed", "not JSON"),
    ("no_images", "no 'images'"),
    ("bad_base64", "not valid base64"),
    ("not_image", "not a PNG"),
    ("wrong_count", "returned 1 images instead of 2"),
    ("error_field", "reported an error: An internal error"),
])
def test_malformed_replies(bedrock, provider, kind, words):
    bedrock.faults.set("invoke", Fault(kind=kind))
    with pytest.raises(pb.UpstreamUnavailable) as info:
        run(provider, req(n=2))
    assert words in info.value.message and info.value.retryable


def test_wrong_count_when_one_image_asked(bedrock, provider):
    bedrock.faults.set("invoke", Fault(kind="wrong_count"))
    with pytest.raises(pb.UpstreamUnavailable, match="returned 2 images instead of 1"):
        run(provider, req(n=1))


def test_error_field_with_content_filter_text_is_a_refusal(bedrock, provider):
    bedrock.faults.set("invoke", Fault(kind="error_field", body="The generated image has been blocked by our "
                                                                 "content filters."))
    with pytest.raises(pb.ContentRefused):
        run(provider, req())


# --- concurrency -----------------------------------------------------------------------------------------------------

def test_concurrency_is_bounded_by_max_workers(bedrock):
    p = make_provider(bedrock.url, max_workers=2)
    bedrock.state["delay"] = 0.25

    async def burst():
        return await asyncio.gather(*[p.run(req(seed=i)) for i in range(6)])

    started = time.monotonic()
    try:
        results = asyncio.run(burst())
    finally:
        p.close()
    assert len(results) == 6 and all(len(r.images) == 1 for r in results)
    assert bedrock.state["max_in_flight"] == 2
    assert time.monotonic() - started >= 0.7  # three waves of two


def test_queued_calls_of_a_cancelled_caller_never_reach_bedrock(bedrock):
    p = make_provider(bedrock.url, max_workers=1)
    bedrock.state["delay"] = 0.4

    async def scenario():
        tasks = [asyncio.create_task(p.run(req(seed=i))) for i in range(3)]
        await asyncio.sleep(0.15)
        for t in tasks[1:]:
            t.cancel()
        first = await tasks[0]
        await asyncio.sleep(0.1)
        return first, [t.cancelled() for t in tasks[1:]]

    try:
        first, cancelled = asyncio.run(scenario())
    finally:
        p.close()
    assert len(first.images) == 1 and cancelled == [True, True]
    assert bedrock.state["calls"] == 1


def test_client_configuration(provider):
    config = provider._client.meta.config
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}  # one request, no retry
    assert config.max_pool_connections == 8 and config.read_timeout == 5.0
    assert provider._executor._max_workers == 8


def test_partial_credentials_are_refused():
    with pytest.raises(ValueError, match="both"):
        BedrockProvider(region="us-east-1", aws_access_key_id="AKIA")


# --- the emulator speaks Bedrock's protocol as boto3 parses it -------------------------------------------------------

@pytest.fixture(scope="module")
def client(bedrock):
    return boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=bedrock.url,
                        aws_access_key_id=emu.ACCESS_KEY, aws_secret_access_key=emu.SECRET_KEY)


def invoke(client, body, model_id=emu.TITAN_V2):
    return client.invoke_model(modelId=model_id, body=json.dumps(body), contentType="application/json",
                               accept="application/json")


def error_of(client, body, model_id=emu.TITAN_V2) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as info:
        invoke(client, body, model_id)
    err = info.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def t2i(**config):
    return {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a cat"},
            "imageGenerationConfig": {"numberOfImages": 1, "width": 512, "height": 512, **config}}


def test_emulator_success_is_the_models_json(client):
    response = invoke(client, t2i(numberOfImages=3))
    assert response["contentType"] == "application/json"
    payload = json.loads(response["body"].read())
    assert len(payload["images"]) == 3 and payload["error"] is None


@pytest.mark.parametrize("body, model_id, words", [
    (t2i(numberOfImages=6), emu.TITAN_V2, "6 is not less or equal to 5"),
    (t2i(width=1000), emu.TITAN_V2, "1000x512 are not supported"),
    (t2i(width=1008, height=1008), emu.NOVA_CANVAS, None),  # Nova's rule admits it
    (t2i(quality="hd"), emu.TITAN_V2, "hd is not a valid enum value"),
    (t2i(cfgScale=11), emu.TITAN_V2, "not between 1.1 and 10.0"),
    (t2i(seed=900_000_000), emu.NOVA_CANVAS, "not between 0 and 858993459"),
    (t2i(seed=900_000_000), emu.TITAN_V2, None),
    ({**t2i(), "extra": 1}, emu.TITAN_V2, "extraneous key [extra]"),
    ({"taskType": "TEXT_IMAGE", "textToImageParams": {}}, emu.TITAN_V1, "required key [text] not found"),
    ({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "y" * 1024}}, emu.NOVA_CANVAS, None),
    ({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "y" * 1025}}, emu.NOVA_CANVAS, "maxLength: 1024"),
    ({"taskType": "OUTPAINTING", "outPaintingParams": {}}, emu.TITAN_V2, "not a valid enum value"),
    (t2i(), "amazon.titan-image-generator-v9", "The provided model identifier is invalid."),
])
def test_emulator_validates_like_bedrock(client, body, model_id, words):
    if words is None:
        assert invoke(client, body, model_id)["ResponseMetadata"]["HTTPStatusCode"] == 200
        return
    code, message, status = error_of(client, body, model_id)
    assert (code, status) == ("ValidationException", 400)
    assert words in message


def test_emulator_inpainting_mask_rules(client):
    image = base64.b64encode(images_util.png(128, 128)).decode()
    grey = io.BytesIO()
    Image.new("RGB", (128, 128), (128, 128, 128)).save(grey, format="PNG")
    small = io.BytesIO()
    Image.new("RGB", (64, 128), (0, 0, 0)).save(small, format="PNG")
    for mask, words in [(grey.getvalue(), "pure black"), (small.getvalue(), "must match")]:
        body = {"taskType": "INPAINTING",
                "inPaintingParams": {"image": image, "maskImage": base64.b64encode(mask).decode()}}
        code, message, _ = error_of(client, body)
        assert code == "ValidationException" and words in message
    both = {"taskType": "INPAINTING", "inPaintingParams": {"image": image, "maskPrompt": "a", "maskImage": image}}
    assert "exactly one of" in error_of(client, both)[1]


def test_emulator_titan_v1_has_no_similarity_strength(client):
    image = base64.b64encode(images_util.png(64, 64)).decode()
    body = {"taskType": "IMAGE_VARIATION", "imageVariationParams": {"images": [image], "similarityStrength": 0.5}}
    assert "extraneous key [similarityStrength]" in error_of(client, body, emu.TITAN_V1)[1]
    assert invoke(client, body, emu.TITAN_V2)["ResponseMetadata"]["HTTPStatusCode"] == 200


@pytest.mark.parametrize("name", sorted(emu.ERRORS))
def test_emulator_errors_parse_in_boto3(bedrock, client, name):
    bedrock.faults.set("invoke", emu.aws_error(name))
    code, message, status = error_of(client, t2i())
    assert (code, message, status) == (name, emu.ERRORS[name][1], emu.ERRORS[name][0])


def test_emulator_requires_sigv4_with_its_access_key(bedrock):
    r = httpx.post(f"{bedrock.url}/model/{emu.TITAN_V2}/invoke", json=t2i())
    assert r.status_code == 403
    assert r.headers["x-amzn-ErrorType"].startswith("UnrecognizedClientException")
    assert r.json() == {"message": "The security token included in the request is invalid."}
    wrong = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=bedrock.url,
                         aws_access_key_id="AKIAOTHER", aws_secret_access_key="x")
    code, _, status = error_of(wrong, t2i())
    assert (code, status) == ("UnrecognizedClientException", 403)


def test_titan_sizes_cover_the_catalog():
    from generation import catalog

    assert set(catalog.TITAN_SIZES) <= set(TITAN_SIZES)
    assert {(int(s.split("x")[0]), int(s.split("x")[1])) for s in TITAN_SIZES} == emu.TITAN_SIZES


def test_non_json_error_page_without_error_type(bedrock, provider):
    bedrock.faults.set("invoke", Fault(status=502, body="<html>Bad Gateway</html>"))
    with pytest.raises(pb.UpstreamUnavailable, match="HTTP 502") as info:
        run(provider, req())
    assert info.value.retryable
