"""Prices and the usage ledger. Money is integer micro-USD (1 USD = 1,000,000) everywhere; never floats."""
from django.db import models
from django.utils import timezone

from accounts.models import ApiKey, Organization
from accounts.tenancy import TenantManager

from .money import exact


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
        return f"{self.model} {self.size} {self.quality}: ${exact(self.unit_price_micros)}"


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
    # Which model, at three levels: `requested_model` is what the client asked for; `model` is the catalog model that
    # served the request and is priced (the replacement when a retired model was remapped, generation/lifecycle.py);
    # `served_model` is the dated upstream snapshot behind it when the upstream named another (an alias such as
    # chatgpt-image-latest → gpt-image-2-2026-04-21). requested_model is blank on rows written before it existed.
    model = models.CharField(max_length=100, blank=True)
    requested_model = models.CharField(max_length=100, blank=True, default="")
    served_model = models.CharField(max_length=100, blank=True, default="")
    # The customer's end user as the request named it (OpenAI's `safety_identifier`, else `user`); "" when none.
    end_user = models.CharField(max_length=256, blank=True, default="")
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
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The row's place in its organization's hash chain is its LedgerSeal, written by the sealer (billing/sealing.py)
    # shortly after the row: the request path inserts the row and touches no row shared with other requests.

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        verbose_name = "ledger entry"
        verbose_name_plural = "ledger entries"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="ledger_org_time"),
            # The staff ledger list filtered by organization and model / provider / status, newest first.
            models.Index(fields=["organization", "model", "-created_at", "-id"], name="ledger_org_model_time"),
            models.Index(fields=["organization", "provider", "-created_at", "-id"], name="ledger_org_provider_time"),
            models.Index(fields=["organization", "status", "-created_at", "-id"], name="ledger_org_status_time"),
            models.Index(fields=["organization", "end_user", "-created_at"], name="ledger_org_end_user_time",
                         condition=~models.Q(end_user="")),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(cost_micros__gte=0), name="ledger_cost_nonnegative"),
            models.CheckConstraint(
                condition=models.Q(status="succeeded") | models.Q(cost_micros=0), name="ledger_failures_free"
            ),
        ]

    def __str__(self):
        return f"{self.request_id} {self.model} {self.status} ${exact(self.cost_micros)}"

    @property
    def images_made(self) -> int:
        """Images the request delivered: n for a success, 0 for anything else (a failure's n is what was asked)."""
        return self.n if self.status == self.Status.SUCCEEDED else 0


class LedgerSeal(models.Model):
    """A ledger row's place in its organization's hash chain: sequence 1, 2, 3, ... in sealing order; `entry_hash`
    is SHA-256 over the row's content, its sequence and the previous seal's hash (billing/ledger.py), so an edited or
    deleted row breaks the chain (`manage.py verify_ledger`). Written once by the sealer, append-only like the ledger
    (a database trigger refuses UPDATE and DELETE)."""

    entry = models.OneToOneField(LedgerEntry, primary_key=True, on_delete=models.PROTECT, related_name="seal")
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+", db_index=False)
    sequence = models.BigIntegerField()
    prev_hash = models.CharField(max_length=64)
    entry_hash = models.CharField(max_length=64)
    sealed_at = models.DateTimeField(default=timezone.now)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "sequence"], name="ledger_seal_sequence"),
        ]

    def __str__(self):
        return f"{self.organization_id}#{self.sequence}"


class LedgerHead(models.Model):
    """The head of an organization's hash chain: the last sealed sequence and hash. Only the sealer writes it."""

    organization = models.OneToOneField(Organization, primary_key=True, on_delete=models.PROTECT, related_name="+")
    sequence = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default="0" * 64)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    def __str__(self):
        return f"{self.organization_id}@{self.sequence}"


class SealState(models.Model):
    """The sealer's watermark (one row, pk=1): every ledger row with id <= last_ledger_id is sealed. Rows above it
    are looked at on every pass (a row that commits late with a lower id is still found)."""

    last_ledger_id = models.BigIntegerField(default=0)
    sealed_at = models.DateTimeField(null=True, blank=True)
    # The longest a row waited for its seal, since the counter was last reset (operators read it; bench reports it).
    max_lag_ms = models.BigIntegerField(default=0)

    def __str__(self):
        return f"sealed up to ledger id {self.last_ledger_id}"


class UsageEvent(models.Model):
    """The billing outbox: one row per charged ledger row, written in the same transaction. The reporter groups
    unreported rows into meter reports; the ledger row itself is never touched again."""

    ledger_entry = models.OneToOneField(LedgerEntry, on_delete=models.PROTECT, related_name="usage_event")
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    value_micros = models.BigIntegerField()
    occurred_at = models.DateTimeField()
    report = models.ForeignKey("MeterReport", null=True, blank=True, on_delete=models.PROTECT, related_name="events")

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        indexes = [models.Index(fields=["report", "organization", "occurred_at"], name="usage_unreported")]

    def __str__(self):
        return f"usage of ledger row {self.ledger_entry_id}: {self.value_micros} µUSD"


class MeterReport(models.Model):
    """One Stripe meter event: the sum of an organization's usage events in one window, under an identifier that
    is fixed before the first send, so a resend can never bill twice."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        EXPIRED = "expired", "Too old for Stripe (alerted)"

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    identifier = models.CharField(max_length=100, unique=True)
    stripe_customer_id = models.CharField(max_length=255)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    value_micros = models.BigIntegerField()
    event_timestamp = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        ordering = ["window_start", "id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="meter_report_due")]

    def __str__(self):
        return f"{self.identifier} {self.value_micros} ({self.status})"


class BillingAccount(models.Model):
    """An organization's billing state: its Stripe customer and subscription (mirrored from webhooks), its
    monthly spend limit."""

    organization = models.OneToOneField(Organization, primary_key=True, on_delete=models.CASCADE,
                                        related_name="billing_account")
    stripe_customer_id = models.CharField(max_length=255, blank=True, db_index=True)
    stripe_subscription_id = models.CharField(max_length=255, blank=True)
    subscription_status = models.CharField(max_length=32, blank=True)
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    past_due_since = models.DateTimeField(null=True, blank=True)
    monthly_spend_limit_micros = models.BigIntegerField(null=True, blank=True)
    # A monthly limit for each end user of the organization (the `user` / `safety_identifier` its requests name),
    # micro-USD; null: none. Counted like the other limits (billing/spend.py).
    end_user_monthly_limit_micros = models.BigIntegerField(null=True, blank=True)
    # subscription id -> unix time of the newest webhook event applied (events can arrive out of order)
    subscription_state = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    def __str__(self):
        return f"billing of {self.organization_id}"


class KeySpendLimit(models.Model):
    """A monthly spend limit on one API key (billing owns money; accounts knows nothing of it)."""

    api_key = models.OneToOneField(ApiKey, primary_key=True, on_delete=models.CASCADE, related_name="spend_limit")
    monthly_limit_micros = models.BigIntegerField()

    all_tenants_unsafe = models.Manager()
    objects = TenantManager(tenant_field="api_key__organization")

    def __str__(self):
        return f"limit of key {self.api_key_id}: {self.monthly_limit_micros} µUSD a month"


class SpendAlert(models.Model):
    """The 80% e-mail for one monthly limit (the organization's, api_key null, or one key's) and month: the row is
    what makes it go out once, whatever Redis forgets. Spend itself is counted in Redis (billing/spend.py)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    # "organization" or "key:<id>": which limit (unique with the month; SQLite cannot make nullable columns unique)
    scope = models.CharField(max_length=40)
    month = models.DateField()
    spent_micros = models.BigIntegerField()
    limit_micros = models.BigIntegerField()
    sent_at = models.DateTimeField(default=timezone.now)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "scope", "month"], name="uniq_spend_alert"),
        ]

    def __str__(self):
        return f"80% alert for {self.scope} of {self.organization_id}, {self.month:%Y-%m}"


class StripeEvent(models.Model):
    """Every webhook event received, once (deduplicated by Stripe's event id)."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self):
        return f"{self.event_id} {self.type}"


class Invoice(models.Model):
    """A mirror of the organization's Stripe invoices, for the billing history page."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    stripe_invoice_id = models.CharField(max_length=255, unique=True)
    number = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=32)
    currency = models.CharField(max_length=10, default="usd")
    amount_due = models.BigIntegerField(default=0)  # in the currency's minor unit (cents), as Stripe sends it
    amount_paid = models.BigIntegerField(default=0)
    hosted_invoice_url = models.URLField(max_length=500, blank=True)
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField()
    event_at = models.DateTimeField(null=True, blank=True)  # the newest webhook event applied
    updated_at = models.DateTimeField(auto_now=True)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return self.number or self.stripe_invoice_id


class StripeSetup(models.Model):
    """What `manage.py stripe_setup` created in Stripe (one row per Stripe account, by API base and key hash)."""

    account_key = models.CharField(max_length=64, unique=True)
    meter_id = models.CharField(max_length=255)
    meter_event_name = models.CharField(max_length=100)
    product_id = models.CharField(max_length=255)
    price_id = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"meter {self.meter_event_name} ({self.meter_id})"


class Discrepancy(models.Model):
    """A difference between the ledger and Stripe's meter summaries for one customer and window."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    ledger_micros = models.BigIntegerField()
    reported_micros = models.BigIntegerField()
    stripe_micros = models.BigIntegerField()
    detected_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        ordering = ["-detected_at"]
        verbose_name_plural = "discrepancies"

    def __str__(self):
        return f"discrepancy of {self.organization_id} from {self.window_start:%Y-%m-%d %H:%M}"


class BillingAlert(models.Model):
    """Something staff must act on (usage older than Stripe accepts, reconciliation gaps, ...)."""

    organization = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=50)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.kind}: {self.message[:60]}"


class UsageRollup(models.Model):
    """Ledger rows summed per organization, UTC day, API key, model, provider and status (billing.rollups keeps it,
    every minute). It holds exactly the ledger rows with id <= RollupState.last_ledger_id; readers add the newer
    tail from the ledger itself, so what they show is exact."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=100, blank=True)
    provider = models.CharField(max_length=50, blank=True)
    status = models.CharField(max_length=16)
    requests = models.BigIntegerField(default=0)
    images = models.BigIntegerField(default=0)  # sum of n over the group's rows (count only status=succeeded)
    cost_micros = models.BigIntegerField(default=0)
    upstream_cost_micros = models.BigIntegerField(default=0)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "day", "api_key", "model", "provider", "status"],
                                    name="uniq_usage_rollup", nulls_distinct=False),
        ]

    def __str__(self):
        return f"{self.organization_id} {self.day} {self.model} {self.status}: {self.requests}"


class RollupState(models.Model):
    """The rollup watermark (one row, pk=1): every ledger row with id <= last_ledger_id is in UsageRollup."""

    last_ledger_id = models.BigIntegerField(default=0)
    refreshed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"rolled up to ledger id {self.last_ledger_id}"
