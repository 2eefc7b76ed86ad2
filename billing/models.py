"""Prices and the usage ledger. Money is integer micro-USD (1 USD = 1,000,000) everywhere; never floats."""
from django.db import models

from accounts.models import ApiKey, Organization
from accounts.tenancy import TenantManager

MICROS_PER_USD = 1_000_000


class Price(models.Model):
    """Our list price for one image of a model at a size and quality, effective from a moment on.

    Prices are data: a new price is a new row with a later `effective_from`; old rows stay so every ledger row
    can point at the price it was charged at."""

    model = models.CharField(max_length=100)
    size = models.CharField(max_length=20)
    quality = models.CharField(max_length=20)
    unit_price_micros = models.BigIntegerField()
    effective_from = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "size", "quality", "effective_from"], name="uniq_price_version"),
            models.CheckConstraint(condition=models.Q(unit_price_micros__gt=0), name="price_positive"),
        ]
        indexes = [models.Index(fields=["model", "size", "quality", "-effective_from"], name="price_lookup")]
        ordering = ["model", "size", "quality", "-effective_from"]

    def __str__(self):
        return f"{self.model} {self.size} {self.quality}: ${self.unit_price_micros / MICROS_PER_USD:.6f}"


class LedgerEntry(models.Model):
    """One row per API request: what was asked, who served it, what it cost. Failures are recorded at zero cost."""

    class Status(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        REFUSED = "refused", "Refused by content policy"
        INVALID = "invalid", "Invalid request"

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    request_id = models.CharField(max_length=64, unique=True)
    endpoint = models.CharField(max_length=32, default="generations")
    model = models.CharField(max_length=100, blank=True)
    provider = models.CharField(max_length=50, blank=True)
    size = models.CharField(max_length=20, blank=True)
    quality = models.CharField(max_length=20, blank=True)
    n = models.PositiveSmallIntegerField(default=0)
    price = models.ForeignKey(Price, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    unit_price_micros = models.BigIntegerField(default=0)
    cost_micros = models.BigIntegerField(default=0)
    upstream_cost_micros = models.BigIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices)
    error_code = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    unscoped = models.Manager()
    objects = TenantManager()

    class Meta:
        verbose_name = "ledger entry"
        verbose_name_plural = "ledger entries"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["organization", "-created_at"], name="ledger_org_time")]
        constraints = [
            models.CheckConstraint(condition=models.Q(cost_micros__gte=0), name="ledger_cost_nonnegative"),
            models.CheckConstraint(
                condition=models.Q(status="succeeded") | models.Q(cost_micros=0), name="ledger_failures_free"
            ),
        ]

    def __str__(self):
        return f"{self.request_id} {self.model} {self.status} ${self.cost_usd:.6f}"

    @property
    def cost_usd(self) -> float:
        return self.cost_micros / MICROS_PER_USD
