"""The provider interface: the small types every upstream adapter speaks, and the errors it may raise.

Adapters depend on this module only: no Django models, no settings lookups. Configuration arrives in the
constructor, so each adapter can be read and tested alone.
"""
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class InputImage:
    """An input image as checked by the gateway: bytes, the sniffed type and its pixel size (pixels). `pixels`, when
    set, is the image decoded once and scaled down to what the model can produce (a PIL RGBA image): the built-in
    renderer draws from it instead of decoding the bytes again for every output image; upstream adapters send
    `data`, the bytes as uploaded."""

    data: bytes
    content_type: str
    width: int
    height: int
    filename: str = "image.png"
    pixels: object | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ImageRequest:
    """One validated request, in our terms (the adapter maps it to its upstream's wire format)."""

    model: str
    prompt: str
    n: int
    size: str
    quality: str
    style: str | None = None
    seed: int | None = None
    user: str | None = None
    # "generate", "edit" (input images, optional mask; also the `image` URL on generations) or "variation".
    mode: str = "generate"
    images: tuple["InputImage", ...] = ()
    mask: "InputImage | None" = None
    # Model-specific extras already validated: background, moderation, output_format, output_compression.
    options: dict = field(default_factory=dict)
    # The client streams (`stream: true`): how many partial images it asked for (0-3); None when it does not
    # stream. An adapter whose upstream streams may ask it for these and hand them to `emit_partial`.
    partial_images: int | None = None

    @property
    def width(self) -> int:
        return int(self.size.split("x")[0])

    @property
    def height(self) -> int:
        return int(self.size.split("x")[1])


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    content_type: str = "image/png"
    revised_prompt: str | None = None


@dataclass(frozen=True)
class ProviderResult:
    images: list[GeneratedImage]
    # What the upstream charged us, when it says (micro-USD); our list price is billing's business.
    upstream_cost_micros: int | None = None
    # When the request asked for "auto" size or quality, what the upstream actually produced (for pricing).
    resolved_size: str | None = None
    resolved_quality: str | None = None
    # What the upstream says it produced, when it says (OpenAI's GPT image models): the background ("transparent" or
    # "opaque") and file format ("png", "jpeg", "webp") of the images.
    resolved_background: str | None = None
    resolved_output_format: str | None = None
    # The dated model that served the request when the upstream names it (an alias such as chatgpt-image-latest).
    served_model: str | None = None
    # The upstream's token usage, as OpenAI reports it: {"input_tokens", "input_tokens_details": {"text_tokens",
    # "image_tokens"}, "output_tokens", "total_tokens"[, "output_tokens_details"]} (ints), or None when it reports none.
    usage: dict | None = None


@dataclass(frozen=True)
class PartialImage:
    """A partial (preview) image an upstream streamed before the final one: base64 as the upstream sent it, its
    0-based index, and the settings of the requested image the upstream's event named (size, quality, background,
    output_format, OpenAI's fields of `image_generation.partial_image`)."""

    b64_json: str
    index: int
    size: str
    quality: str
    background: str
    output_format: str


# Where partial images go while a client streams: set by the API's streaming module (generation/api/streaming.py)
# around the request it serves, read by adapters that can stream. Unset (None) on every other request.
partial_sink: ContextVar[Callable[[PartialImage], None] | None] = ContextVar("partial_sink", default=None)


def emit_partial(partial: PartialImage) -> None:
    """Hand a partial image to the streaming client of the request being served (nothing when none streams)."""
    sink = partial_sink.get()
    if sink is not None:
        sink(partial)


def streams_partials(request: ImageRequest) -> bool:
    """The client of `request` streams and asked for at least one partial image, and something receives them."""
    return bool(request.partial_images) and partial_sink.get() is not None


class Provider(Protocol):
    """An upstream. `run` serves every mode the provider's models support (see ImageRequest.mode)."""

    name: str

    def serves(self) -> set[str]:
        """Our catalog model ids this provider instance can serve."""
        ...

    def upstream_cost_micros(self, request: ImageRequest) -> int:
        """What the upstream charges us for `request` (all n images), in micro-USD, from its published prices."""
        ...

    async def run(self, request: ImageRequest) -> ProviderResult: ...


class ProviderError(Exception):
    """Base of every adapter error. `retryable` errors may fail over to another provider; `transient` ones are worth
    another attempt at the same upstream within the same call (a poll or a download that failed in passing: a
    connection dropped, a timeout, a 5xx), which the adapter decides (transport.py marks its own failures)."""

    retryable = False

    def __init__(self, message: str, *, provider: str = "", transient: bool = False):
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.transient = transient


class ContentRefused(ProviderError):
    """The upstream's safety system refused the prompt or image. Never charged, never retried elsewhere."""


class UpstreamInvalidRequest(ProviderError):
    """The upstream rejected a parameter; the message carries its reason."""


class ModelGone(ProviderError):
    """The upstream says the model no longer exists (OpenAI answers 404 `model_not_found` for dall-e-2 and dall-e-3
    since it retired them on 2026-05-12). Retryable: another provider that serves the model may still have it
    (an OpenAI-compatible host); the router answers like a retired model only when none does. Not a health failure:
    the upstream is working."""

    retryable = True


class UpstreamRateLimited(ProviderError):
    """The upstream refused for rate (HTTP 429). `retry_after_seconds` (float, or None) is the wait the upstream asked
    for (`retry-after-ms`, `retry-after`, or a hint in its body), for the gateway to pass on."""

    retryable = True
    retry_after_seconds: float | None = None

    def __init__(self, message: str, *, provider: str = "", transient: bool = False,
                 retry_after_seconds: float | None = None):
        super().__init__(message, provider=provider, transient=transient)
        self.retry_after_seconds = retry_after_seconds


class UpstreamTimeout(ProviderError):
    retryable = True


class UpstreamUnavailable(ProviderError):
    """5xx, connection errors, malformed replies."""

    retryable = True


EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def upload_filename(filename: str, content_type: str, stem: str = "image") -> str:
    """The name to upload an input image under: `filename` (or `stem`) with the extension of its sniffed
    `content_type` (png, jpg/jpeg, webp), since upstreams read the type from the name. "photo" + image/jpeg →
    "photo.jpg"; "a.png" + image/webp → "a.webp"; "" + image/png, stem "mask" → "mask.png"."""
    ext = EXTENSIONS.get(content_type, "png")
    name = filename or f"{stem}.{ext}"
    current = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if current == ext or (ext == "jpg" and current == "jpeg"):
        return name
    return f"{name.rsplit('.', 1)[0] if current else name}.{ext}"


def sniff_image_type(data: bytes) -> str | None:
    """The image type from its magic bytes (never from a header or a name): image/png, image/jpeg or image/webp;
    None for anything else. The one sniffer every adapter, the URL fetcher and the upload checks share."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
