"""Input images (edits, variations, generations' `image` URL): type by content, size limits, decoded once and bounded.

Decoding is where an image costs memory and CPU: a 47 KB PNG can declare 7000x7000 pixels (196 MB once decoded). So:
  1. the header is read first (no pixel data): type by content, dimensions, and the model's pixel cap
     (`InputImageRules.max_pixels`) refuse what is too large before anything is decoded;
  2. each image is decoded once per request, on a thread, scaled down while decoding (JPEG decodes at 1/2, 1/4 or
     1/8 scale through libjpeg's draft mode; other formats are reduced right after) to what the model can produce;
     a file whose pixel data is missing or broken is refused here (400 invalid_image), never later;
  3. decodes in flight in a process share a memory budget (`DECODE_BUDGET_BYTES`, estimated as width × height × 4):
     a request waits for room rather than pushing the process past it;
  4. the decoded copy is kept only where the gateway draws from it itself (the built-in renderer: `keep_pixels`),
     scaled to the size the request asks for, and reserved for the request's life from a second budget
     (`KeptPixels`, `KEPT_BUDGET_BYTES`) in one go, so no request waits for memory while holding some; upstream
     adapters send the uploaded bytes, and the copy is dropped at once.
After a burst of large decodes the process hands freed memory back to the system (`malloc_trim`), so its resident
size returns to its baseline (tests/test_input_images.py measures it on a server process).
"""
import asyncio
import contextvars
import ctypes
import ctypes.util
import io
import threading
from contextlib import asynccontextmanager

from PIL import Image, UnidentifiedImageError

from generation.catalog import PNG, InputImageRules, ModelSpec
from generation.errors import InvalidRequest
from generation.providers.base import InputImage, sniff_image_type

MAX_PIXELS = 50_000_000  # any model: Pillow's decompression-bomb guard stays below this too
DECODE_BUDGET_BYTES = 256 * 1024 * 1024  # full-size decodes in flight per process
KEPT_BUDGET_BYTES = 256 * 1024 * 1024  # scaled copies kept by requests in flight (the built-in renderer's)
PREVIEW_LIMIT = 2048  # the longest side a kept decoded copy is scaled to (at most what a model produces)
TRIM_AFTER_BYTES = 16 * 1024 * 1024  # after a decode this large, and none in flight, hand memory back

Image.MAX_IMAGE_PIXELS = MAX_PIXELS
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
                  Image.DecompressionBombWarning)


def sniff(data: bytes) -> str | None:
    """The image type from the first bytes, never from a header or a file name (GIF is recognised so that it can
    be refused by name)."""
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return sniff_image_type(data)


def header(data: bytes, *, param: str, max_pixels: int = MAX_PIXELS) -> tuple[str, int, int]:
    """(content type, width, height) from the file's header, without decoding pixels; InvalidRequest for an
    unknown type, an unreadable header or more than `max_pixels` pixels."""
    content_type = sniff(data)
    if content_type is None:
        raise InvalidRequest(
            f"Invalid '{param}': the uploaded file is not a PNG, JPEG or WebP image (its content was checked, "
            "not its name).", param=param, code="invalid_image_format",
        )
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except _DECODE_ERRORS as exc:
        raise _undecodable(param, exc) from exc
    if width * height > max_pixels:
        raise InvalidRequest(f"Invalid '{param}': the image is {width}x{height} ({width * height:,} pixels); this "
                             f"model accepts input images of at most {max_pixels:,} pixels.", param=param,
                             code="image_too_large")
    return content_type, width, height


def decode(data: bytes, *, param: str, limit: int = PREVIEW_LIMIT) -> Image.Image:
    """The image decoded once and scaled to fit `limit` × `limit` (RGBA); InvalidRequest if its pixel data is
    missing or broken. CPU work: run it on a thread."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (limit, limit))  # JPEG: decode at a reduced scale; a no-op for other formats
            img.load()
            img.thumbnail((limit, limit), Image.Resampling.LANCZOS, reducing_gap=2.0)
            return img.convert("RGBA")
    except _DECODE_ERRORS as exc:
        raise _undecodable(param, exc) from exc


def _undecodable(param: str, exc: Exception) -> InvalidRequest:
    return InvalidRequest(f"Invalid '{param}': the image could not be decoded ({exc.__class__.__name__}). Upload a "
                          "complete PNG, JPEG or WebP file.", param=param, code="invalid_image")


class _Budget:
    """Bytes of decoded pixels in this process; `acquire` waits until an amount fits."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    async def acquire(self, amount: int) -> int:
        amount = min(amount, self.capacity)
        while True:
            with self._lock:
                if self.used + amount <= self.capacity:
                    self.used += amount
                    return amount
                loop = asyncio.get_running_loop()
                waiter = loop.create_future()
                self._waiters.append((loop, waiter))
            await waiter

    def release(self, amount: int) -> None:
        with self._lock:
            self.used -= amount
            waiters, self._waiters = self._waiters, []
            idle = self.used == 0
        for loop, waiter in waiters:  # let every waiter look again (there are few)
            loop.call_soon_threadsafe(lambda w=waiter: w.done() or w.set_result(None))
        if amount >= TRIM_AFTER_BYTES and idle and not waiters:
            _trim()

    @asynccontextmanager
    async def hold(self, amount: int):
        held = await self.acquire(amount)
        try:
            yield
        finally:
            self.release(held)


# Two budgets, so that no request holds one while waiting for the other's own kind: full-size decodes, one at a time
# per image and short; and the scaled copies a request keeps for the built-in renderer, reserved once per request.
_decoding = _Budget(DECODE_BUDGET_BYTES)
_kept = _Budget(KEPT_BUDGET_BYTES)
_libc = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def _trim() -> None:
    """Give freed heap memory back to the system (glibc keeps large freed blocks otherwise)."""
    if _libc is not None and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


def keep_policy(spec: ModelSpec | None, size: str | None) -> tuple[bool, int]:
    """(keep a decoded copy?, the longest side to scale it to) for a request to `spec` asking for `size`: only the
    built-in renderer draws from decoded pixels, and it never needs more than the output size."""
    if spec is None or spec.providers != ("local",):
        return False, PREVIEW_LIMIT
    limit = min(spec.max_side, PREVIEW_LIMIT)
    if size and size in spec.sizes and "x" in size:
        limit = min(limit, max(int(d) for d in size.split("x")))
    return True, limit


def kept_size(width: int, height: int, limit: int) -> int:
    """Bytes of the RGBA copy of a width × height image scaled to fit limit × limit."""
    scale = min(1.0, limit / max(width, height, 1))
    return max(1, int(width * scale)) * max(1, int(height * scale)) * 4


_current_kept: contextvars.ContextVar["KeptPixels | None"] = contextvars.ContextVar("kept_pixels", default=None)


def current_kept() -> "KeptPixels | None":
    """The KeptPixels of the request being served (None outside one)."""
    return _current_kept.get()


class KeptPixels:
    """The scaled copies one request keeps, reserved from the process's budget in one go (`reserve`, before the
    decodes) and given back when the request ends (`async with`, which also makes it `current_kept()`)."""

    def __init__(self):
        self.reserved = 0
        self._token = None

    async def reserve(self, amount: int) -> None:
        if amount > KEPT_BUDGET_BYTES:
            raise InvalidRequest("The input images are too large together: send fewer or smaller images.",
                                 param="image", code="image_too_large")
        self.reserved += await _kept.acquire(amount)

    async def __aenter__(self):
        self._token = _current_kept.set(self)
        return self

    async def __aexit__(self, *exc):
        _current_kept.reset(self._token)
        if self.reserved:
            _kept.release(self.reserved)
            self.reserved = 0


async def inspect(data: bytes, *, param: str, filename: str = "image", rules: InputImageRules | None = None,
                  keep_pixels: bool = False, limit: int = PREVIEW_LIMIT,
                  known: tuple[str, int, int] | None = None) -> InputImage:
    """Check and decode one input image (see the module's docstring); with `keep_pixels` the decoded, scaled copy
    travels with it (InputImage.pixels: reserve its bytes with KeptPixels first). `known` is the `header()` of
    `data` when the caller has read it already."""
    max_pixels = rules.max_pixels if rules is not None else MAX_PIXELS
    content_type, width, height = known or header(data, param=param, max_pixels=max_pixels)
    if rules is not None and content_type not in rules.content_types:  # validation refuses it by name: no decode
        return InputImage(data=data, content_type=content_type, width=width, height=height, filename=filename)
    async with _decoding.hold(width * height * 4):
        pixels = await asyncio.to_thread(decode, data, param=param, limit=limit)
    return InputImage(data=data, content_type=content_type, width=width, height=height, filename=filename,
                      pixels=pixels if keep_pixels else None)


async def inspect_uploads(uploads: list[tuple[str, bytes, str]], *, spec: ModelSpec | None,
                          size: str | None) -> dict[str, list[InputImage]]:
    """A form's uploaded files ((field, bytes, filename) in order) checked and decoded for a request to `spec` at
    `size`: every header first (what is too large is refused before any decode), the built-in renderer's kept
    copies reserved in one go (within the current KeptPixels), then one decode each. {field: [InputImage, ...]}."""
    rules = spec.input_images if spec is not None else None
    keep, limit = keep_policy(spec, size)
    max_pixels = rules.max_pixels if rules is not None else MAX_PIXELS
    known = [header(data, param=field, max_pixels=max_pixels) for field, data, _ in uploads]
    if keep:
        await current_kept().reserve(sum(kept_size(w, h, limit) for _, w, h in known))
    inspected: dict[str, list[InputImage]] = {}
    for (field, data, filename), head in zip(uploads, known):
        inspected.setdefault(field, []).append(await inspect(
            data, param=field, filename=filename, rules=rules, keep_pixels=keep, limit=limit, known=head))
    return inspected


def check_inputs(images: list[InputImage], spec: ModelSpec, *, param: str = "image") -> None:
    rules: InputImageRules = spec.input_images
    if not images:
        raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if len(images) > rules.max_images:
        raise InvalidRequest(f"Invalid '{param}': model '{spec.id}' accepts at most {rules.max_images} input "
                             f"image{'s' if rules.max_images > 1 else ''}, got {len(images)}.", param=param,
                             code="invalid_parameter")
    for image in images:
        check_one(image, rules, spec, param=param)


def check_one(image: InputImage, rules: InputImageRules, spec: ModelSpec, *, param: str) -> None:
    if len(image.data) > rules.max_bytes:
        raise InvalidRequest(f"Invalid '{param}': the image is {len(image.data) / 1_048_576:.1f} MB; model "
                             f"'{spec.id}' accepts images under {rules.max_bytes // 1_048_576} MB.", param=param,
                             code="image_too_large")
    if image.content_type not in rules.content_types:
        raise InvalidRequest(f"Invalid '{param}': model '{spec.id}' accepts {rules.describe_types()} images, "
                             f"got {image.content_type.split('/')[1].upper()}.", param=param,
                             code="invalid_image_format")
    if rules.square and image.width != image.height:
        raise InvalidRequest(f"Invalid '{param}': model '{spec.id}' needs a square image; this one is "
                             f"{image.width}x{image.height}.", param=param, code="invalid_image_dimensions")


def check_mask(mask: InputImage, image: InputImage, spec: ModelSpec) -> None:
    if mask.content_type != PNG:
        raise InvalidRequest("Invalid 'mask': the mask must be a PNG with an alpha channel (transparent = the area to "
                             "edit).", param="mask", code="invalid_image_format")
    if len(mask.data) > spec.input_images.max_bytes:
        raise InvalidRequest(f"Invalid 'mask': the mask must be under {spec.input_images.max_bytes // 1_048_576} MB.",
                             param="mask", code="image_too_large")
    if (mask.width, mask.height) != (image.width, image.height):
        raise InvalidRequest(f"Invalid 'mask': the mask is {mask.width}x{mask.height} but the image is "
                             f"{image.width}x{image.height}; they must be the same size.", param="mask",
                             code="invalid_image_dimensions")
    with Image.open(io.BytesIO(mask.data)) as img:  # the header says; the pixels were decoded once already
        if "A" not in img.getbands() and "transparency" not in img.info:
            raise InvalidRequest("Invalid 'mask': the mask has no alpha channel. Transparent pixels (alpha 0) mark "
                                 "the area to edit.", param="mask", code="invalid_mask")
