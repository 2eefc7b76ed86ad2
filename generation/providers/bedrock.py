"""Provider `bedrock`: Amazon Titan Image Generator G1 (v1, v2) and Amazon Nova Canvas on Amazon Bedrock.

Wire format (Bedrock Runtime InvokeModel, one JSON body per call; the three models share the schema):

    invoke_model(modelId="amazon.titan-image-generator-v2:0", contentType="application/json",
                 accept="application/json", body=json.dumps({
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": prompt},
        "imageGenerationConfig": {"numberOfImages": n, "height": h, "width": w, "cfgScale": 8.0,
                                  "seed": seed, "quality": "standard" | "premium"},
    }))  ->  {"images": ["<base64 PNG>", ...], "error": null}

Our modes map to Bedrock task types:

- "generate"                  -> TEXT_IMAGE, `textToImageParams.text` = prompt.
- "variation"                 -> IMAGE_VARIATION, `imageVariationParams.images` = [input], no text.
- "edit" without a mask       -> IMAGE_VARIATION with the prompt as `text` (image-to-image; also what a generations
                                 request with an `image` URL becomes).
- "edit" with a mask          -> INPAINTING, `inPaintingParams` = {image, maskImage, text: prompt}.

Masks. OpenAI's convention: the mask is a PNG whose fully transparent pixels (alpha 0) mark the area to edit; any
other alpha keeps the pixel. Bedrock's convention (Titan and Nova Canvas docs, `maskImage`): an image whose pixels are
either black (0 0 0) = inside the mask = the area the model changes, or white (255 255 255) = outside the mask = kept.
So alpha 0 -> black, everything else -> white. The conversion is done at the mask's own resolution (a hard threshold,
no anti-aliased grey), then the mask is resized with nearest-neighbour so it stays pure black and white.

Input images are normalised before they are sent: EXIF orientation applied, transparency flattened onto white
(Bedrock wants RGB), and fitted (scaled, centre-cropped) to the requested size, always a size the model can produce.
The mask gets the identical fit, so the two stay pixel-aligned; INPAINTING's output takes the input image's size, so
the caller gets request.size in every mode. Image work uses Pillow (a project dependency, as in `local.py`).

Seeds. Titan accepts 0..2,147,483,646 and Nova Canvas 0..858,993,459; the gateway accepts 0..2**32-1 and adds an
offset per parallel call, so a given seed is folded into the model's range (seed mod (max + 1)): deterministic and
always valid. Without a seed the adapter picks a random one: Bedrock's default seed is a fixed number, so omitting it
would make identical requests (and the parallel calls of one n > 5 request) return identical pictures, which no
OpenAI client expects.

Concurrency. boto3 is synchronous: each call runs in a dedicated, bounded ThreadPoolExecutor (`max_workers`) with
ONE boto3 client per provider instance (clients are thread-safe) whose connection pool matches the executor, so no
thread ever waits for a connection. The trade-off: at most `max_workers` upstream calls are in flight per process;
a burst beyond that queues (FIFO) in the executor instead of spawning threads without bound. Time spent queued
counts toward the gateway's latency but not toward botocore's read timeout. A queued call whose caller gave up
(task cancelled) is dropped before it reaches Bedrock; a call already in flight runs to completion or to its read
timeout, since a thread cannot be interrupted. Bedrock's own quotas for image models are modest, so the default of
64 is generous for one process.

Retries are off inside (botocore `total_max_attempts: 1`, i.e. one request and no retry; `max_attempts: 1` would
still allow one retry): the gateway's router fails over between providers.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from PIL import Image, ImageOps

from .base import (
    ContentRefused,
    GeneratedImage,
    ImageRequest,
    ProviderResult,
    UpstreamInvalidRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    sniff_image_type,
)

# Titan Image Generator G1 (v1 and v2): the documented width x height pairs.
TITAN_SIZES: tuple[str, ...] = (
    "1024x1024", "768x768", "512x512", "768x1152", "384x576", "1152x768", "576x384", "768x1280", "384x640",
    "1280x768", "640x384", "896x1152", "448x576", "1152x896", "576x448", "768x1408", "384x704", "1408x768",
    "704x384", "640x1408", "320x704", "1408x640", "704x320", "1152x640", "1173x640",
)
NOVA_SIZE_RULE = ("width and height from 320 to 4096 pixels, each divisible by 16, aspect ratio between 1:4 and 4:1, "
                  "at most 4,194,304 pixels in total")

QUALITIES = ("standard", "premium")
MAX_IMAGES_PER_CALL = 5  # numberOfImages 1-5

# Messages Bedrock uses when its safety systems refuse a request (ValidationException, or the `error` field).
_CONTENT_FILTER_MARKERS = ("content filter", "responsible ai", "content moderation")

_CREDENTIAL_ERROR_CODES = {
    "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException",
    "IncompleteSignature", "MissingAuthenticationTokenException", "MissingAuthenticationToken",
    "InvalidClientTokenId", "SignatureDoesNotMatch",
}


@dataclass(frozen=True)
class BedrockModel:
    model_id: str  # Bedrock's modelId
    family: str  # "titan" | "nova" (prices, sizes)
    max_text: int  # characters of text / negativeText
    seed_max: int
    cfg_scale: float  # the model's documented default
    max_variation_images: int  # IMAGE_VARIATION `images` list length


MODELS: dict[str, BedrockModel] = {
    "titan-image-generator-v1": BedrockModel("amazon.titan-image-generator-v1", "titan", 512, 2_147_483_646, 8.0, 1),
    "titan-image-generator-v2": BedrockModel("amazon.titan-image-generator-v2:0", "titan", 512, 2_147_483_646, 8.0,
                                             5),
    "nova-canvas": BedrockModel("amazon.nova-canvas-v1:0", "nova", 1024, 858_993_459, 6.5, 5),
}

# Upstream list prices, micro-USD per image: (family, quality) -> (small, large).
# Titan: small = up to 512x512 pixels; Nova Canvas: small = up to 1024x1024 pixels.
_PRICES = {
    ("titan", "standard"): (8_000, 10_000),
    ("titan", "premium"): (10_000, 12_000),
    ("nova", "standard"): (40_000, 60_000),
    ("nova", "premium"): (60_000, 80_000),
}
_SMALL_PIXELS = {"titan": 512 * 512, "nova": 1024 * 1024}


def nova_size_ok(width: int, height: int) -> bool:
    return (320 <= width <= 4096 and 320 <= height <= 4096 and width % 16 == 0 and height % 16 == 0
            and width * height <= 4_194_304 and max(width, height) <= 4 * min(width, height))




# --- image preparation (runs in the worker thread: CPU work never blocks the event loop) ---------------------------

def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=3)
    return out.getvalue()


def prepare_image(data: bytes, width: int, height: int) -> bytes:
    """An input image as Bedrock wants it: RGB, upright, fitted (scaled and centre-cropped) to width x height, PNG."""
    with Image.open(io.BytesIO(data)) as source:
        image = ImageOps.exif_transpose(source)
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, (0, 0), rgba)
            image = flat
        else:
            image = image.convert("RGB")
        return _png(ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS))


def openai_mask_to_bedrock(mask: bytes, image_size: tuple[int, int], width: int, height: int) -> bytes:
    """OpenAI mask (alpha 0 = edit) -> Bedrock maskImage (black = edit, white = keep), fitted like the image.

    `image_size` is the input image's original size: the mask is first brought to it (it normally already is), so
    the same centre crop applies to both.
    """
    with Image.open(io.BytesIO(mask)) as source:
        alpha = source.convert("RGBA").getchannel("A")
    binary = alpha.point(lambda a: 255 if a > 0 else 0)  # transparent -> black (inside the mask), else white
    if binary.size != image_size:
        binary = binary.resize(image_size, Image.Resampling.NEAREST)
    fitted = ImageOps.fit(binary, (width, height), method=Image.Resampling.NEAREST)
    return _png(fitted.convert("RGB"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _is_content_filter(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _CONTENT_FILTER_MARKERS)


class BedrockProvider:
    """Provider `bedrock`: titan-image-generator-v1/-v2 and nova-canvas through Bedrock Runtime InvokeModel."""

    name = "bedrock"

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        timeout: float = 120.0,
        max_workers: int = 64,
    ):
        if (aws_access_key_id is None) != (aws_secret_access_key is None):
            raise ValueError("BedrockProvider: give both aws_access_key_id and aws_secret_access_key, or neither "
                             "(then boto3's default credential chain is used).")
        if max_workers < 1:
            raise ValueError("BedrockProvider: max_workers must be at least 1.")
        self.region = region
        self.timeout = float(timeout)
        self.max_workers = max_workers
        session = boto3.session.Session(
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
            region_name=region,
        )
        config = Config(
            region_name=region,
            connect_timeout=min(self.timeout, 10.0),
            read_timeout=self.timeout,
            # No retries inside: the gateway's router fails over. Note botocore's `max_attempts` counts RETRIES
            # (max_attempts=1 means two requests); `total_max_attempts` counts the first request too.
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=max_workers,
            user_agent_extra="imagegate",
        )
        self._client = session.client("bedrock-runtime", endpoint_url=endpoint_url, config=config)
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="bedrock")

    # --- Provider interface ----------------------------------------------------------------------------------------

    def serves(self) -> set[str]:
        return set(MODELS)

    def upstream_cost_micros(self, request: ImageRequest) -> int:
        """Bedrock's on-demand list price for all n images (Titan by 512x512, Nova Canvas by 1024x1024 pixels)."""
        model = self._model(request)
        prices = _PRICES.get((model.family, request.quality))
        if prices is None:
            raise self._invalid(f"quality '{request.quality}' is not supported; use one of: {', '.join(QUALITIES)}.")
        small, large = prices
        width, height = self._dimensions(request, model)
        unit = small if width * height <= _SMALL_PIXELS[model.family] else large
        return unit * request.n

    async def run(self, request: ImageRequest) -> ProviderResult:
        model = self._model(request)
        self._check(request, model)
        cost = self.upstream_cost_micros(request)
        loop = asyncio.get_running_loop()
        # If the caller is cancelled while the job is still queued, asyncio cancels the executor future and the
        # call never reaches Bedrock.
        images = await loop.run_in_executor(self._executor, self._call, request, model)
        return ProviderResult(images=images, upstream_cost_micros=cost)

    def close(self) -> None:
        """Release the worker threads and the connection pool (optional; for shutdown and tests)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # --- request mapping --------------------------------------------------------------------------------------------

    def _invalid(self, reason: str) -> UpstreamInvalidRequest:
        return UpstreamInvalidRequest(f"Bedrock cannot serve this request: {reason}", provider=self.name)

    def _model(self, request: ImageRequest) -> BedrockModel:
        model = MODELS.get(request.model)
        if model is None:
            raise self._invalid(f"model '{request.model}' is not served by Bedrock; it serves "
                                f"{', '.join(MODELS)}.")
        return model

    def _dimensions(self, request: ImageRequest, model: BedrockModel) -> tuple[int, int]:
        try:
            width, height = request.width, request.height
        except (ValueError, IndexError):
            width = height = -1
        ok = (f"{width}x{height}" in TITAN_SIZES) if model.family == "titan" else nova_size_ok(width, height)
        if not ok:
            can = ", ".join(TITAN_SIZES) if model.family == "titan" else NOVA_SIZE_RULE
            raise self._invalid(f"size '{request.size}' is not supported by {request.model}; supported: {can}.")
        return width, height

    def _check(self, request: ImageRequest, model: BedrockModel) -> None:
        if request.quality not in QUALITIES:
            raise self._invalid(f"quality '{request.quality}' is not supported; use one of: {', '.join(QUALITIES)}.")
        if not 1 <= request.n <= MAX_IMAGES_PER_CALL:
            raise self._invalid(f"n={request.n}: one Bedrock call returns 1 to {MAX_IMAGES_PER_CALL} images.")
        self._dimensions(request, model)
        if request.seed is not None and request.seed < 0:
            raise self._invalid(f"seed {request.seed} is negative.")
        if request.mode == "generate":
            if not request.prompt:
                raise self._invalid("a prompt is required to generate an image.")
        elif request.mode in ("edit", "variation"):
            if not request.images:
                raise self._invalid(f"mode '{request.mode}' needs an input image.")
            if request.mode == "edit" and request.mask is not None:
                if len(request.images) != 1:
                    raise self._invalid("inpainting with a mask takes exactly one input image.")
            elif len(request.images) > model.max_variation_images:
                raise self._invalid(f"{request.model} takes at most {model.max_variation_images} input image(s).")
        else:
            raise self._invalid(f"mode '{request.mode}' is not supported; use generate, edit or variation.")

    def _seed(self, request: ImageRequest, model: BedrockModel) -> int:
        if request.seed is None:
            return secrets.randbelow(model.seed_max + 1)
        return request.seed % (model.seed_max + 1)

    def build_body(self, request: ImageRequest, model: BedrockModel | None = None) -> dict:
        """The InvokeModel body for `request` (public so tests and tools can inspect the mapping)."""
        model = model or self._model(request)
        width, height = request.width, request.height
        config = {
            "numberOfImages": request.n,
            "height": height,
            "width": width,
            "cfgScale": model.cfg_scale,
            "seed": self._seed(request, model),
            "quality": request.quality,
        }
        if request.mode == "generate":
            return {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": request.prompt},
                    "imageGenerationConfig": config}
        if request.mode == "edit" and request.mask is not None:
            source = request.images[0]
            with Image.open(io.BytesIO(source.data)) as probe:  # the true decoded size (EXIF rotation aside)
                oriented = ImageOps.exif_transpose(probe).size
            params = {
                "image": _b64(prepare_image(source.data, width, height)),
                "maskImage": _b64(openai_mask_to_bedrock(request.mask.data, oriented, width, height)),
            }
            if request.prompt:
                params["text"] = request.prompt
            # The output takes the input image's size; the image is fitted to width x height, which the config
            # repeats (as AWS's own INPAINTING examples do).
            return {"taskType": "INPAINTING", "inPaintingParams": params, "imageGenerationConfig": config}
        # "variation", and "edit" without a mask (image-to-image guided by the prompt).
        params = {"images": [_b64(prepare_image(img.data, width, height)) for img in request.images]}
        if request.mode == "edit" and request.prompt:
            params["text"] = request.prompt
        return {"taskType": "IMAGE_VARIATION", "imageVariationParams": params, "imageGenerationConfig": config}

    # --- the call (worker thread) -----------------------------------------------------------------------------------

    def _call(self, request: ImageRequest, model: BedrockModel) -> list[GeneratedImage]:
        try:
            body = json.dumps(self.build_body(request, model), separators=(",", ":"))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise self._invalid(f"the input image or mask could not be read: {exc}") from exc
        try:
            response = self._client.invoke_model(
                modelId=model.model_id, body=body, contentType="application/json", accept="application/json",
            )
            raw = response["body"].read()
        except ClientError as exc:
            raise self._map_client_error(exc) from exc
        except ReadTimeoutError as exc:
            raise UpstreamTimeout(f"Bedrock did not answer within {self.timeout:g} s ({exc}).",
                                  provider=self.name) from exc
        except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as exc:
            raise UpstreamUnavailable(f"Bedrock credentials are missing or unusable for the gateway: {exc}",
                                      provider=self.name) from exc
        except BotoConnectionError as exc:
            raise UpstreamUnavailable(f"Could not connect to Bedrock: {exc}", provider=self.name) from exc
        except BotoCoreError as exc:
            raise UpstreamUnavailable(f"Bedrock call failed: {exc}", provider=self.name) from exc
        return self._parse(raw, request.n)

    def _map_client_error(self, exc: ClientError):
        error = exc.response.get("Error", {}) or {}
        code = str(error.get("Code") or "")
        message = str(error.get("Message") or "").strip() or "(no message)"
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        reason = f"{code}: {message}" if code else message
        p = self.name
        if code == "ValidationException":
            if _is_content_filter(message):
                return ContentRefused(f"Bedrock's content filters blocked the request: {message}", provider=p)
            return UpstreamInvalidRequest(f"Bedrock rejected the request ({reason})", provider=p)
        if code in _CREDENTIAL_ERROR_CODES:
            return UpstreamUnavailable(f"Bedrock rejected the gateway's credentials or model access ({reason}); "
                                       "check the AWS keys, IAM permissions and model access in the region.",
                                       provider=p)
        if code in ("ThrottlingException", "ServiceQuotaExceededException") or (
                status == 429 and code != "ModelNotReadyException"):
            return UpstreamRateLimited(f"Bedrock is throttling requests ({reason})", provider=p)
        if code == "ModelTimeoutException" or status == 408:
            return UpstreamTimeout(f"Bedrock's model timed out ({reason})", provider=p)
        if code == "ResourceNotFoundException":
            return UpstreamUnavailable(f"Bedrock does not offer this model to the gateway here ({reason}); check the "
                                       "region and model access.", provider=p)
        # InternalServerException 500, ServiceUnavailableException 503, ModelErrorException 424,
        # ModelNotReadyException 429, and anything unknown.
        return UpstreamUnavailable(f"Bedrock failed ({reason}, HTTP {status})", provider=p)

    def _parse(self, raw: bytes, n: int) -> list[GeneratedImage]:
        p = self.name
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UpstreamUnavailable(f"Bedrock returned a reply that is not JSON: {raw[:120]!r}", provider=p) from exc
        if not isinstance(payload, dict):
            raise UpstreamUnavailable("Bedrock returned a JSON reply that is not an object.", provider=p)
        error = payload.get("error")
        if error:
            if _is_content_filter(str(error)):
                raise ContentRefused(f"Bedrock's content filters blocked the result: {error}", provider=p)
            raise UpstreamUnavailable(f"Bedrock reported an error: {error}", provider=p)
        images = payload.get("images")
        if not isinstance(images, list):
            raise UpstreamUnavailable("Bedrock's reply has no 'images' list.", provider=p)
        if len(images) != n:
            raise UpstreamUnavailable(f"Bedrock returned {len(images)} images instead of {n}.", provider=p)
        result = []
        for index, item in enumerate(images):
            if not isinstance(item, str):
                raise UpstreamUnavailable(f"Bedrock's image {index} is not a base64 string.", provider=p)
            try:
                data = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise UpstreamUnavailable(f"Bedrock's image {index} is not valid base64.", provider=p) from exc
            content_type = sniff_image_type(data)
            if content_type is None:
                raise UpstreamUnavailable(f"Bedrock's image {index} is not a PNG, JPEG or WebP image.", provider=p)
            result.append(GeneratedImage(data=data, content_type=content_type, revised_prompt=None))
        return result
