"""Amazon Bedrock Runtime emulator: InvokeModel for Titan Image Generator G1 (v1, v2) and Nova Canvas.

Speaks the wire protocol real boto3 expects (REST-JSON): `POST /model/{modelId}/invoke` with the model's JSON body.

- Success: 200, `content-type: application/json`, the model's body `{"images": [<base64 PNG>, ...], "error": null}`.
- Errors: the status, `x-amzn-ErrorType: <Name>:http://internal.amazon.com/coral/com.amazon.bedrock/` and
  `{"message": "..."}`, so botocore raises ClientError with Error.Code = <Name> and Error.Message = message.
- Auth: SigV4 signatures are not verified, but the `Authorization` header must start with "AWS4-HMAC-SHA256" and
  name ACCESS_KEY as its credential, else 403 UnrecognizedClientException.
- Validation as the models document it: taskType (TEXT_IMAGE, IMAGE_VARIATION, INPAINTING), text length (Titan 512,
  Nova Canvas 1024), numberOfImages 1-5, width/height (Titan's table; Nova's rule), quality, cfgScale 1.1-10,
  seed (Titan 0-2147483646, Nova 0-858993459), input images decodable PNG/JPEG, INPAINTING's maskImage the input's
  size and pure black (edit) / white (keep), no extraneous keys. Failures are 400 ValidationException with a
  "Malformed input request: ..." message.
- A prompt (any text field) containing "forbidden-upstream" gets AWS's content-filter ValidationException.

Async and cheap: a capacity benchmark can hold many concurrent requests, each delayed `emulator.state["delay"]`
seconds; `state["in_flight"]` / `state["max_in_flight"]` / `state["calls"]` count them.

Faults (`emulator.faults.set("invoke", Fault(...))`; `aws_error(name)` builds the error ones):
    aws_error("ThrottlingException" | "ModelTimeoutException" | "InternalServerException" |
              "ServiceUnavailableException" | "AccessDeniedException" | "ValidationException" | ...)
    Fault(kind="refuse")        content-filter ValidationException
    Fault(kind="malformed")     200 with a non-JSON body (or `body` when given)
    Fault(kind="no_images")     200 JSON without "images"
    Fault(kind="bad_base64")    200 with an image that is not base64
    Fault(kind="not_image")     200 with base64 that is not an image
    Fault(kind="wrong_count")   200 with one image too few (two when one was asked for)
    Fault(kind="error_field")   200 with "error" set (`body` = the error text)
    Fault(delay=s)              answer after s seconds (combine with any of the above)
"""
import asyncio
import base64
import binascii
import contextlib
import io
import json
import uuid

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .base import Fault, Faults, Recorded, make_png, serve

ACCESS_KEY = "AKIAIMAGEGATEEMULATOR"
SECRET_KEY = "imagegate/emulator/secret/key/0123456789"
FORBIDDEN = "forbidden-upstream"
CONTENT_FILTER_MESSAGE = ("This request has been blocked by our content filters. Please adjust your text prompt to "
                          "submit a new request.")

TITAN_V1 = "amazon.titan-image-generator-v1"
TITAN_V2 = "amazon.titan-image-generator-v2:0"
NOVA_CANVAS = "amazon.nova-canvas-v1:0"

# Titan Image Generator G1's documented width x height pairs.
TITAN_SIZES = {
    (1024, 1024), (768, 768), (512, 512), (768, 1152), (384, 576), (1152, 768), (576, 384), (768, 1280), (384, 640),
    (1280, 768), (640, 384), (896, 1152), (448, 576), (1152, 896), (576, 448), (768, 1408), (384, 704), (1408, 768),
    (704, 384), (640, 1408), (320, 704), (1408, 640), (704, 320), (1152, 640), (1173, 640),
}

MODELS = {
    TITAN_V1: {"family": "titan", "max_text": 512, "seed_max": 2_147_483_646, "max_images": 1, "similarity": False},
    TITAN_V2: {"family": "titan", "max_text": 512, "seed_max": 2_147_483_646, "max_images": 5, "similarity": True},
    NOVA_CANVAS: {"family": "nova", "max_text": 1024, "seed_max": 858_993_459, "max_images": 5, "similarity": True},
}

ERRORS = {  # name -> (status, default message), as Bedrock Runtime answers them
    "ValidationException": (400, "Malformed input request, please reformat your input and try again."),
    "AccessDeniedException": (403, "You don't have access to the model with the specified model ID."),
    "UnrecognizedClientException": (403, "The security token included in the request is invalid."),
    "ResourceNotFoundException": (404, "The requested resource could not be found."),
    "ModelTimeoutException": (408, "Model has timed out in processing the request. Try your request again."),
    "ModelErrorException": (424, "The model encountered an error while processing the request."),
    "ThrottlingException": (429, "Too many requests, please wait before trying again."),
    "ModelNotReadyException": (429, "The model is not ready to serve inference requests. Try again later."),
    "ServiceQuotaExceededException": (400, "Your request exceeds the service quota for your account."),
    "InternalServerException": (500, "The server encountered an internal error while processing the request."),
    "ServiceUnavailableException": (503, "Bedrock is unable to process your request."),
}


def error_response(name: str, message: str | None = None, status: int | None = None) -> Response:
    default_status, default_message = ERRORS.get(name, (500, "Unknown error."))
    return JSONResponse(
        {"message": message or default_message},
        status_code=status or default_status,
        headers={"x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                 "x-amzn-RequestId": str(uuid.uuid4())},
    )


def aws_error(name: str, message: str | None = None, *, times: int | None = None, delay: float = 0.0) -> Fault:
    """A Fault answering with Bedrock's error `name` (status, x-amzn-ErrorType header, {"message"})."""
    status, default_message = ERRORS[name]
    return Fault(status=status, body={"message": message or default_message}, times=times, delay=delay,
                 headers={"x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"})


class Invalid(Exception):
    """A ValidationException with Bedrock's message."""


def _malformed(path: str, problem: str) -> Invalid:
    return Invalid(f"Malformed input request: #{path}: {problem}, please reformat your input and try again.")


def _only_keys(obj: dict, path: str, allowed: set[str]) -> None:
    for key in obj:
        if key not in allowed:
            raise Invalid(f"Malformed input request: #{path}: extraneous key [{key}] is not permitted, please "
                          "reformat your input and try again.")


def _text(params: dict, key: str, path: str, max_len: int, *, required: bool) -> str | None:
    value = params.get(key)
    if value is None:
        if required:
            raise _malformed(path, f"required key [{key}] not found")
        return None
    if not isinstance(value, str):
        raise _malformed(f"{path}/{key}", f"expected type: String, found: {type(value).__name__}")
    if not 1 <= len(value) <= max_len:
        raise _malformed(f"{path}/{key}", f"expected minLength: 1, maxLength: {max_len}, actual: {len(value)}")
    return value


def _image(value, path: str) -> Image.Image:
    if not isinstance(value, str):
        raise _malformed(path, "expected a base64-encoded PNG or JPEG string")
    try:
        data = base64.b64decode(value, validate=True)
        image = Image.open(io.BytesIO(data))
        image.load()
    except (binascii.Error, ValueError, OSError):
        raise Invalid("The provided image is not a valid PNG or JPEG image.") from None
    if image.format not in ("PNG", "JPEG"):
        raise Invalid(f"The provided image format {image.format} is not supported; use PNG or JPEG.")
    w, h = image.size
    if not (64 <= w <= 4096 and 64 <= h <= 4096):
        raise Invalid(f"The provided image size {w}x{h} is not supported.")
    return image


def validate(model_id: str, body) -> dict:
    """Check a request body as Bedrock does; returns a summary used to build the answer."""
    spec = MODELS[model_id]
    if not isinstance(body, dict):
        raise Invalid("Malformed input request: expected a JSON object, please reformat your input and try again.")
    task = body.get("taskType")
    params_key = {"TEXT_IMAGE": "textToImageParams", "IMAGE_VARIATION": "imageVariationParams",
                  "INPAINTING": "inPaintingParams"}.get(task)
    if params_key is None:
        raise _malformed("/taskType", f"{task!r} is not a valid enum value (emulated: TEXT_IMAGE, IMAGE_VARIATION, "
                                      "INPAINTING)")
    _only_keys(body, "", {"taskType", params_key, "imageGenerationConfig"})
    params = body.get(params_key)
    if not isinstance(params, dict):
        raise _malformed("", f"required key [{params_key}] not found")
    path = f"/{params_key}"
    max_text = spec["max_text"]
    texts = []
    input_size = None
    if task == "TEXT_IMAGE":
        _only_keys(params, path, {"text", "negativeText"})
        texts.append(_text(params, "text", path, max_text, required=True))
    elif task == "IMAGE_VARIATION":
        allowed = {"text", "negativeText", "images"} | ({"similarityStrength"} if spec["similarity"] else set())
        _only_keys(params, path, allowed)
        texts.append(_text(params, "text", path, max_text, required=False))
        images = params.get("images")
        if not isinstance(images, list) or not 1 <= len(images) <= spec["max_images"]:
            raise _malformed(f"{path}/images", f"expected a list of 1 to {spec['max_images']} images")
        for i, value in enumerate(images):
            _image(value, f"{path}/images/{i}")
        strength = params.get("similarityStrength")
        if strength is not None and not (isinstance(strength, (int, float)) and 0.2 <= strength <= 1.0):
            raise _malformed(f"{path}/similarityStrength", f"{strength} is not between 0.2 and 1.0")
    else:  # INPAINTING
        _only_keys(params, path, {"image", "text", "negativeText", "maskPrompt", "maskImage", "returnMask"})
        texts.append(_text(params, "text", path, max_text, required=False))
        if "image" not in params:
            raise _malformed(path, "required key [image] not found")
        image = _image(params["image"], f"{path}/image")
        input_size = image.size
        has_prompt, has_image = "maskPrompt" in params, "maskImage" in params
        if has_prompt == has_image:
            raise _malformed(path, "exactly one of [maskPrompt, maskImage] is required")
        if has_prompt:
            _text(params, "maskPrompt", path, max_text, required=True)
        else:
            mask = _image(params["maskImage"], f"{path}/maskImage")
            if mask.size != image.size:
                raise Invalid(f"The mask image size {mask.size[0]}x{mask.size[1]} must match the input image size "
                              f"{image.size[0]}x{image.size[1]}.")
            colors = {c for _, c in (mask.convert("RGB").getcolors(maxcolors=1 << 20) or [])}
            if not colors <= {(0, 0, 0), (255, 255, 255)}:
                raise Invalid("The mask image must contain only pure black (0 0 0) and pure white (255 255 255) "
                              "pixels.")
    texts.append(_text(params, "negativeText", path, max_text, required=False))

    config = body.get("imageGenerationConfig", {})
    if not isinstance(config, dict):
        raise _malformed("/imageGenerationConfig", "expected type: JSONObject")
    cpath = "/imageGenerationConfig"
    _only_keys(config, cpath, {"numberOfImages", "height", "width", "cfgScale", "seed", "quality"})
    n = config.get("numberOfImages", 1)
    if not isinstance(n, int) or isinstance(n, bool):
        raise _malformed(f"{cpath}/numberOfImages", "expected type: Integer")
    if n < 1:
        raise _malformed(f"{cpath}/numberOfImages", f"{n} is not greater or equal to 1")
    if n > 5:
        raise _malformed(f"{cpath}/numberOfImages", f"{n} is not less or equal to 5")
    width, height = config.get("width", 1024), config.get("height", 1024)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height)):
        raise _malformed(cpath, "width and height must be integers")
    if spec["family"] == "titan":
        if (width, height) not in TITAN_SIZES:
            raise Invalid(f"The provided image dimensions {width}x{height} are not supported. See the supported "
                          "image sizes in the Amazon Titan Image Generator documentation.")
    elif not (320 <= width <= 4096 and 320 <= height <= 4096 and width % 16 == 0 and height % 16 == 0
              and width * height <= 4_194_304 and max(width, height) <= 4 * min(width, height)):
        raise Invalid(f"The provided image dimensions {width}x{height} are not supported: width and height must be "
                      "320-4096, divisible by 16, aspect ratio 1:4 to 4:1, at most 4194304 pixels.")
    if task == "INPAINTING" and ("width" in config or "height" in config) and (width, height) != input_size:
        raise Invalid(f"The requested size {width}x{height} must match the input image size "
                      f"{input_size[0]}x{input_size[1]} for INPAINTING.")
    quality = config.get("quality", "standard")
    if quality not in ("standard", "premium"):
        raise _malformed(f"{cpath}/quality", f"{quality} is not a valid enum value")
    cfg = config.get("cfgScale", 8.0)
    if not isinstance(cfg, (int, float)) or isinstance(cfg, bool) or not 1.1 <= cfg <= 10.0:
        raise _malformed(f"{cpath}/cfgScale", f"{cfg} is not between 1.1 and 10.0")
    seed = config.get("seed", 42 if spec["family"] == "titan" else 12)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= spec["seed_max"]:
        raise _malformed(f"{cpath}/seed", f"{seed} is not between 0 and {spec['seed_max']}")
    return {"task": task, "n": n, "width": width, "height": height, "seed": seed, "quality": quality,
            "texts": [t for t in texts if t]}


def _json(payload, status: int = 200) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type="application/json",
                    headers={"x-amzn-RequestId": str(uuid.uuid4())})


def build_app(faults: Faults, requests: list, state: dict) -> Starlette:
    async def invoke(request: Request) -> Response:
        raw = await request.body()
        requests.append(Recorded(request.method, request.url.path, dict(request.headers), raw))
        state["calls"] = state.get("calls", 0) + 1
        state["in_flight"] = state.get("in_flight", 0) + 1
        state["max_in_flight"] = max(state.get("max_in_flight", 0), state["in_flight"])
        try:
            return await _invoke(request, raw)
        finally:
            state["in_flight"] = state.get("in_flight", 1) - 1

    async def _invoke(request: Request, raw: bytes) -> Response:
        auth = request.headers.get("authorization", "")
        credential = auth.partition("Credential=")[2].split("/", 1)[0]
        if not auth.startswith("AWS4-HMAC-SHA256") or credential != ACCESS_KEY:
            return error_response("UnrecognizedClientException")

        delay = float(state.get("delay") or 0)
        fault = faults.take("invoke")
        if fault is not None and fault.delay:
            delay += fault.delay
        if delay:
            await asyncio.sleep(delay)
        if fault is not None and fault.status is not None:
            body = fault.body if fault.body is not None else {"message": "Injected fault."}
            content = json.dumps(body).encode() if isinstance(body, dict) else (
                body.encode() if isinstance(body, str) else body)
            return Response(content, status_code=fault.status, headers=fault.headers, media_type="application/json")
        kind = fault.kind if fault is not None else ""
        if kind == "refuse":
            return error_response("ValidationException", CONTENT_FILTER_MESSAGE)
        if kind == "malformed":
            body = fault.body if fault.body is not None else b"<html><body>502 Bad Gateway</body></html>"
            return Response(body if isinstance(body, bytes) else str(body).encode(), status_code=200,
                            media_type="application/json")

        model_id = request.path_params["model_id"]
        if model_id not in MODELS:
            return error_response("ValidationException", "The provided model identifier is invalid.")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return error_response("ValidationException", "The provided content type is not supported; use "
                                                         "application/json.")
        accept = request.headers.get("accept", "application/json")
        if accept not in ("application/json", "*/*"):
            return error_response("ValidationException", f"The provided Accept type {accept} is not supported.")
        try:
            body = json.loads(raw)
        except ValueError:
            return error_response("ValidationException", "Malformed input request: the body is not valid JSON, "
                                                         "please reformat your input and try again.")
        try:
            summary = validate(model_id, body)
        except Invalid as exc:
            return error_response("ValidationException", str(exc))
        if any(FORBIDDEN in t for t in summary["texts"]):
            return error_response("ValidationException", CONTENT_FILTER_MESSAGE)

        n = summary["n"]
        seed_text = "|".join([model_id, summary["task"], *summary["texts"], str(summary["seed"]),
                              summary["quality"]])
        images = [base64.b64encode(make_png(f"{seed_text}|{i}", summary["width"], summary["height"])).decode()
                  for i in range(n)]
        if kind == "no_images":
            return _json({"error": None})
        if kind == "bad_base64":
            images[0] = "!!! this is not base64 !!!"
        if kind == "not_image":
            images[0] = base64.b64encode(b"definitely not an image").decode()
        if kind == "wrong_count":
            images = images[:-1] if n > 1 else images * 2
        if kind == "error_field":
            return _json({"images": [], "error": fault.body or "An internal error occurred in the model."})
        return _json({"images": images, "error": None})

    return Starlette(routes=[Route("/model/{model_id:path}/invoke", invoke, methods=["POST"])])


@contextlib.contextmanager
def emulator():
    """Serve the Bedrock emulator on loopback; yields base.Emulator (url, faults, requests, state)."""
    faults, requests, state = Faults(), [], {}
    with serve(build_app(faults, requests, state), faults=faults, requests=requests, state=state) as em:
        yield em
