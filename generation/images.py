"""Checks on uploaded input images (edits, variations): type by content, size limits, square PNG where required."""
import io

from PIL import Image, UnidentifiedImageError

from .catalog import PNG, InputImageRules, ModelSpec
from .errors import InvalidRequest
from .providers.base import InputImage, sniff_image_type

MAX_PIXELS = 50_000_000  # refuse decompression bombs before Pillow allocates them

def sniff(data: bytes) -> str | None:
    """The image type from the first bytes, never from a header or a file name (GIF is recognised so that it can
    be refused by name)."""
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return sniff_image_type(data)


def inspect(data: bytes, *, param: str, filename: str = "image") -> InputImage:
    """Verify the bytes are a whole, decodable image of a known type; return it with its dimensions."""
    content_type = sniff(data)
    if content_type is None:
        raise InvalidRequest(
            f"Invalid '{param}': the uploaded file is not a PNG, JPEG or WebP image (its content was checked, "
            "not its name).", param=param, code="invalid_image_format",
        )
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise InvalidRequest(f"Invalid '{param}': the image is {width}x{height}, larger than "
                                     f"{MAX_PIXELS:,} pixels.", param=param, code="image_too_large")
            img.verify()
    except InvalidRequest:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidRequest(f"Invalid '{param}': the image could not be decoded ({exc.__class__.__name__}). "
                             "Upload a complete PNG, JPEG or WebP file.", param=param, code="invalid_image") from exc
    return InputImage(data=data, content_type=content_type, width=width, height=height, filename=filename)


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
    with Image.open(io.BytesIO(mask.data)) as img:
        if "A" not in img.getbands() and "transparency" not in img.info:
            raise InvalidRequest("Invalid 'mask': the mask has no alpha channel. Transparent pixels (alpha 0) mark "
                                 "the area to edit.", param="mask", code="invalid_mask")
