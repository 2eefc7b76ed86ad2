"""Where generated images live: the default Django storage (files under media/, or S3 through django-storages),
behind URLs on our own host that are signed and expire (IMAGE_URL_TTL_SECONDS, 60 minutes by default).

The URL carries a signed, timestamped token naming the object; the serving view checks the signature and age
(410 once expired, 404 if forged or gone). Serving through our host keeps one behaviour for both backends.
"""
import dataclasses
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils import timezone

from generation.models import StoredImage

_SALT = "imagegate.image-url"
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class ImageExpired(Exception):
    pass


class ImageNotFound(Exception):
    pass


@dataclass(frozen=True)
class SavedImage:
    """An image file written to storage, waiting for its StoredImage row (written with the request's ledger row)."""

    index: int
    name: str
    content_type: str
    size_bytes: int


def save_files(*, request_id: str, images) -> list[SavedImage]:
    """Write each generated image (objects with .data and .content_type) to the default storage: blocking I/O,
    run it on a thread. The rows come later, in the request's one transaction (`record_image`)."""
    now = timezone.now()
    saved = []
    for index, image in enumerate(images):
        ext = _EXTENSIONS.get(image.content_type, "bin")
        name = default_storage.save(f"images/{now:%Y/%m/%d}/{request_id}-{index}.{ext}", ContentFile(image.data))
        saved.append(SavedImage(index=index, name=name, content_type=image.content_type, size_bytes=len(image.data)))
    return saved


def delete_files(saved: list[SavedImage]) -> None:
    """Remove files whose rows were never written (the request failed after saving them)."""
    for item in saved:
        try:
            default_storage.delete(item.name)
        except Exception:
            pass


def image_row(*, organization_id: int, request_id: str, saved: SavedImage) -> StoredImage:
    """The (unsaved) row of a saved file, valid for IMAGE_URL_TTL_SECONDS."""
    return StoredImage(
        organization_id=organization_id, request_id=request_id, index=saved.index, name=saved.name,
        content_type=saved.content_type, size_bytes=saved.size_bytes,
        expires_at=timezone.now() + timedelta(seconds=settings.IMAGE_URL_TTL_SECONDS),
    )


def record_image(*, organization_id: int, request_id: str, saved: SavedImage) -> StoredImage:
    row = image_row(organization_id=organization_id, request_id=request_id, saved=saved)
    row.save(force_insert=True)
    return row


def store_image(*, organization_id: int, request_id: str, index: int, data: bytes, content_type: str) -> StoredImage:
    """Save one image and its row at once (pages and tests; the API writes the row in its own transaction)."""
    from types import SimpleNamespace

    saved = save_files(request_id=request_id, images=[SimpleNamespace(data=data, content_type=content_type)])[0]
    return record_image(organization_id=organization_id, request_id=request_id,
                        saved=dataclasses.replace(saved, index=index))


def signed_path(name_or_image, content_type: str | None = None) -> str:
    """The signed URL path of a stored image (a StoredImage, or its name and content type)."""
    if content_type is None:
        name_or_image, content_type = name_or_image.name, name_or_image.content_type
    token = signing.TimestampSigner(salt=_SALT).sign_object({"n": name_or_image, "t": content_type})
    ext = _EXTENSIONS.get(content_type, "bin")
    return reverse("image-file", kwargs={"token": token, "ext": ext})


def open_signed(token: str):
    """(file, content_type) for a valid token; ImageExpired after the TTL; ImageNotFound if forged or deleted."""
    signer = signing.TimestampSigner(salt=_SALT)
    try:
        payload = signer.unsign_object(token, max_age=settings.IMAGE_URL_TTL_SECONDS)
    except signing.SignatureExpired as exc:
        raise ImageExpired() from exc
    except signing.BadSignature as exc:
        raise ImageNotFound() from exc
    name = payload["n"]
    if not default_storage.exists(name):
        raise ImageNotFound()
    return default_storage.open(name, "rb"), payload["t"]


def delete_expired(*, now=None, batch: int = 500) -> int:
    """Delete stored objects past their expiry; returns how many. Runs in a Celery task, never in a request."""
    now = now or timezone.now()
    deleted = 0
    while True:
        due = StoredImage.all_tenants_unsafe.filter(expires_at__lte=now, deleted_at__isnull=True)
        rows = list(due.order_by("id")[:batch])
        if not rows:
            return deleted
        for row in rows:
            try:
                default_storage.delete(row.name)
            except FileNotFoundError:
                pass
        StoredImage.all_tenants_unsafe.filter(pk__in=[r.pk for r in rows]).update(deleted_at=now)
        deleted += len(rows)
