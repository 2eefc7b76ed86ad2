from django.db import models

from accounts.models import Organization
from accounts.tenancy import TenantManager


class StoredImage(models.Model):
    """An image kept in storage behind a signed URL, until it expires (then the expiry task deletes the object)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    request_id = models.CharField(max_length=64, db_index=True)
    index = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=255, unique=True)  # the storage object's name
    content_type = models.CharField(max_length=50, default="image/png")
    size_bytes = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    unscoped = models.Manager()
    objects = TenantManager()

    class Meta:
        ordering = ["request_id", "index"]
        constraints = [models.UniqueConstraint(fields=["request_id", "index"], name="uniq_image_per_request_index")]

    def __str__(self):
        return self.name
