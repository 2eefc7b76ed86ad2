"""Small image factories for tests."""
import io

from PIL import Image


def png(width: int = 64, height: int = 64, color=(200, 40, 40, 255), mode: str = "RGBA") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), color if mode == "RGBA" else color[:3]).save(out, format="PNG")
    return out.getvalue()


def jpeg(width: int = 64, height: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(out, format="JPEG")
    return out.getvalue()


def mask(width: int = 64, height: int = 64) -> bytes:
    """Transparent (alpha 0) left half = the area to edit."""
    img = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    img.paste((0, 0, 0, 0), (0, 0, width // 2, height))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size
