"""The provider interface: the small types every upstream adapter speaks, and the errors it may raise.

Adapters depend on this module only: no Django models, no settings lookups. Configuration arrives in the
constructor, so each adapter can be read and tested alone.
"""
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class InputImage:
    """An input image as checked by the gateway: bytes, the sniffed type and its pixel size."""

    data: bytes
    content_type: str
    width: int
    height: int
    filename: str = "image.png"


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
    """Base of every adapter error. `retryable` errors may fail over to another provider."""

    retryable = False

    def __init__(self, message: str, *, provider: str = ""):
        super().__init__(message)
        self.message = message
        self.provider = provider


class ContentRefused(ProviderError):
    """The upstream's safety system refused the prompt or image. Never charged, never retried elsewhere."""


class UpstreamInvalidRequest(ProviderError):
    """The upstream rejected a parameter; the message carries its reason."""


class UpstreamRateLimited(ProviderError):
    """The upstream's rate limit or quota. `retry_after_seconds` is the upstream's own hint, when it gave one
    (Retry-After, Google's RetryInfo.retryDelay, ...): the gateway passes it on to the client."""

    retryable = True
    retry_after_seconds: float | None = None


class UpstreamTimeout(ProviderError):
    retryable = True


class UpstreamUnavailable(ProviderError):
    """5xx, connection errors, malformed replies."""

    retryable = True


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
