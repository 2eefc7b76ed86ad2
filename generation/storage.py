"""Where generated images live: the default Django storage (files under media/, or S3 through django-storages),
behind URLs on our own host that are signed and expire (IMAGE_URL_TTL_SECONDS, 60 minutes by default).

The URL carries a signed, timestamped token naming the object; the serving view checks the signature and age
(410 once expired, 404 if forged or gone). Serving through our host keeps one behaviour for both backends.
"""
from datetime import timedelta

from django.conf import settings
from django.core import signing
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils import timezone

from .models import StoredImage

_SALT = "imagegate.image-url"
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class ImageExpired(Exception):
    pass


class ImageNotFound(Exception):
    pass


def store_image(*, organization_id: int, request_id: str, index: int, data: bytes, content_type: str) -> StoredImage:
    now = timezone.now()
    ext = _EXTENSIONS.get(content_type, "bin")
    wanted = f"images/{now:%Y/%m/%d}/{request_id}-{index}.{ext}"
    name = default_storage.save(wanted, ContentFile(data))
    return StoredImage.unscoped.create(
        organization_id=organization_id,
        request_id=request_id,
        index=index,
        name=name,
        content_type=content_type,
        size_bytes=len(data),
        expires_at=now + timedelta(seconds=settings.IMAGE_URL_TTL_SECONDS),
    )


def signed_path(stored: StoredImage) -> str:
    token = signing.TimestampSigner(salt=_SALT).sign_object({"n": stored.name, "t": stored.content_type})
    ext = _EXTENSIONS.get(stored.content_type, "bin")
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
        rows = list(StoredImage.unscoped.filter(expires_at__lte=now, deleted_at__isnull=True).order_by("id")[:batch])
        if not rows:
            return deleted
        for row in rows:
            try:
                default_storage.delete(row.name)
            except FileNotFoundError:
                pass
        StoredImage.unscoped.filter(pk__in=[r.pk for r in rows]).update(deleted_at=now)
        deleted += len(rows)
