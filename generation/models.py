from django.db import models
from django.utils import timezone

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

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        ordering = ["request_id", "index"]
        constraints = [models.UniqueConstraint(fields=["request_id", "index"], name="uniq_image_per_request_index")]

    def __str__(self):
        return self.name


class IdempotentResponse(models.Model):
    """The response of a charged request made with an Idempotency-Key, written in the same transaction as its
    ledger row (generation/pipeline/commit.py): a retry after any crash finds the first result here, never charges
    twice.
    The unique (organization, key) pair is what makes a second charge for one key impossible in the database itself.
    Kept 24 hours, like the Redis copy that serves replays in the common case (generation/pipeline/idempotency.py)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    key_hash = models.CharField(max_length=64)  # SHA-256 of the client's Idempotency-Key
    fingerprint = models.CharField(max_length=80)
    request_id = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField()
    body = models.TextField()  # the JSON answer, as sent
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "key_hash"], name="uniq_idempotent_key")]

    def __str__(self):
        return f"{self.organization_id}/{self.key_hash[:12]} → {self.request_id}"


class ModerationCategory(models.Model):
    """One category of the content policy (e.g. hate, self-harm): a switch and the terms under it.

    Global, not tenant-owned: one policy for every organization. Staff edit it in the admin; the engine
    (generation/pipeline/moderation.py) compiles the enabled categories' enabled terms and refuses matching prompts."""

    slug = models.SlugField(
        max_length=50, unique=True, help_text="Recorded in the request log when a prompt is refused."
    )
    name = models.CharField(max_length=100)
    description = models.TextField(
        blank=True, help_text="What this category covers, for staff. Never shown to customers."
    )
    enabled = models.BooleanField(default=True, help_text="Off: none of this category's terms are checked.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        verbose_name = "moderation category"
        verbose_name_plural = "moderation categories"

    def __str__(self):
        return self.name


class ModerationTerm(models.Model):
    """A word or phrase that makes a prompt refused, matched case-insensitively as whole words (see moderation.py)."""

    class Kind(models.TextChoices):
        WORD = "word", "Whole word or phrase"
        PREFIX = "prefix", "Word or phrase start (any ending)"

    category = models.ForeignKey(ModerationCategory, on_delete=models.CASCADE, related_name="terms")
    term = models.CharField(
        max_length=200,
        help_text="A word or phrase. Case, accents, punctuation and spacing do not matter: 'forbidden-test-term' "
                  "also matches 'Forbidden  test_term'.",
    )
    kind = models.CharField(
        max_length=10, choices=Kind.choices, default=Kind.WORD,
        help_text="Whole word: 'ass' does not match 'class' or 'assassin'. Word start: 'behead' also matches "
                  "'beheading' and 'beheaded'.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["category__slug", "term"]
        constraints = [models.UniqueConstraint(fields=["category", "term"], name="uniq_moderation_term_per_category")]

    def __str__(self):
        return self.term


class ProviderAttempt(models.Model):
    """One upstream call made for a request: who was tried, how long it took, how it ended. The audit trail of
    routing and failover (the request's ledger row says what was charged)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    request_id = models.CharField(max_length=64, db_index=True)
    attempt = models.PositiveSmallIntegerField()
    provider = models.CharField(max_length=50)
    model = models.CharField(max_length=100)
    status = models.CharField(max_length=16)
    error_type = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        ordering = ["request_id", "attempt"]
        constraints = [models.UniqueConstraint(fields=["request_id", "attempt"], name="uniq_attempt_per_request")]

    def __str__(self):
        return f"{self.request_id}#{self.attempt} {self.provider} {self.status}"


class RequestText(models.Model):
    """What a request said and was told, for its page in the request log: the prompt, kept for the organization's
    `prompt_retention_days` (then blanked by generation.tasks.purge_prompts, or earlier by the customer), and the
    full error message of a failure (our own text, kept as long as the ledger row). generation/prompts.py."""

    class Removal(models.TextChoices):
        EXPIRED = "expired", "Deleted after the retention period"
        CUSTOMER = "customer", "Deleted by a member of the organization"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    request_id = models.CharField(max_length=64, unique=True)
    prompt = models.TextField(blank=True)
    prompt_expires_at = models.DateTimeField(null=True, blank=True)
    prompt_deleted_at = models.DateTimeField(null=True, blank=True)
    prompt_deleted_reason = models.CharField(max_length=16, choices=Removal.choices, blank=True)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        indexes = [models.Index(fields=["prompt_expires_at"], name="request_text_prompt_expiry",
                                condition=models.Q(prompt_expires_at__isnull=False))]

    def __str__(self):
        return self.request_id


class ImageJob(models.Model):
    """An image request run in the background (`Prefer: respond-async`, generation/pipeline/jobs.py): its state, the
    request it runs (kept until it ends), and its answer (kept as long as the answer's image URLs live).

    `request_id` is the request's id in the ledger: the ledger row, its upstream attempts and its stored images carry
    it, and the charged answer is committed with the ledger row under it (IdempotentResponse), so a job that runs
    twice (its worker died) is charged once and answers with the first result."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    id = models.CharField(max_length=40, primary_key=True)  # imgjob_...
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey("accounts.ApiKey", null=True, on_delete=models.SET_NULL, related_name="+")
    endpoint = models.CharField(max_length=20)  # generations | edits
    request_id = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    model = models.CharField(max_length=100)
    parameters = models.JSONField(default=dict)  # what the client sent, without the prompt (shown on the job)
    request = models.JSONField(default=dict)  # what the client sent, prompt included (dropped when the job ends)
    form = models.BooleanField(default=False)  # multipart (edits): fields are strings, as a form sends them
    base_url = models.CharField(max_length=500)  # image URLs are built on it, as the request would have had them
    idempotency_key_hash = models.CharField(max_length=64, blank=True)  # SHA-256 of the Idempotency-Key, or ""
    fingerprint = models.CharField(max_length=80, blank=True)
    result = models.JSONField(null=True, blank=True)  # the synchronous answer's body on success
    error = models.JSONField(null=True, blank=True)  # OpenAI's error object on failure
    attempts = models.PositiveSmallIntegerField(default=0)
    lease_token = models.CharField(max_length=32, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "idempotency_key_hash"],
                                               condition=~models.Q(idempotency_key_hash=""),
                                               name="uniq_image_job_idempotency_key")]
        indexes = [models.Index(fields=["organization", "-created_at", "-id"], name="image_job_org_created")]

    def __str__(self):
        return f"{self.id} {self.status}"


class ImageJobInput(models.Model):
    """An uploaded image of an edits job, as sent, until the job ends (the worker checks and decodes it again)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    job = models.ForeignKey(ImageJob, on_delete=models.CASCADE, related_name="inputs")
    field = models.CharField(max_length=20)  # image | image[] | mask
    position = models.PositiveSmallIntegerField()
    filename = models.CharField(max_length=255)
    data = models.BinaryField()

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        ordering = ["job", "position"]

    def __str__(self):
        return f"{self.job_id}/{self.position} {self.field}"


class WebhookEndpoint(models.Model):
    """An organization's HTTPS endpoint for job events (generation/pipeline/webhooks.py), signed with its secret.

    The secret is kept (HMAC needs it) and shown once, when created or rotated. After a rotation the previous secret
    keeps signing, beside the new one, until `previous_secret_expires_at` (24 hours)."""

    id = models.CharField(max_length=40, primary_key=True)  # we_...
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    enabled_events = models.JSONField(default=list)
    secret = models.CharField(max_length=100)
    previous_secret = models.CharField(max_length=100, blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self):
        return f"{self.id} {self.url}"


class WebhookEvent(models.Model):
    """One event (evt_...): a job that ended. Its body is fixed when it happens; every delivery sends the same."""

    id = models.CharField(max_length=40, primary_key=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    type = models.CharField(max_length=40)
    job_id = models.CharField(max_length=40, db_index=True)  # the job it is about (ImageJob.id)
    body = models.TextField()  # the JSON sent, byte for byte what is signed
    created_at = models.DateTimeField(default=timezone.now)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.id} {self.type}"


class WebhookDelivery(models.Model):
    """One event to one endpoint: retried with exponential backoff until it is answered 2xx or 3 days have passed."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)  # the last attempt's HTTP status
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["event", "endpoint"], name="uniq_delivery_per_endpoint")]

    def __str__(self):
        return f"{self.event_id} → {self.endpoint_id} {self.status}"


class ModelLifecycle(models.Model):
    """Where a catalog model stands in its life: active, deprecated (still served, with Deprecation and Sunset
    headers) or retired (404 `model_not_found` naming the replacement, or served by the replacement for
    organizations that turned remapping on). Global, not tenant-owned: staff edit it in the admin; the request path
    reads it from a per-process cache (generation/lifecycle.py) that every save drops in every process.

    What a model *is* (sizes, providers, capabilities) stays in generation/catalog.py; this row holds only its
    lifecycle, one row per catalog model id (missing rows are created as active after every migrate)."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        DEPRECATED = "deprecated", "Deprecated (still served, with Deprecation/Sunset headers)"
        RETIRED = "retired", "Retired (404, or the replacement for organizations that remap)"

    model = models.CharField(max_length=100, unique=True, help_text="The catalog model id (generation/catalog.py).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    deprecated_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When the model was (or will be) deprecated: the Deprecation header (RFC 9745). Required for "
                  "deprecated and retired models.")
    sunset_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When the model stops being served: the Sunset header (RFC 8594). A deprecated model whose sunset "
                  "has passed is treated as retired.")
    replacement = models.CharField(
        max_length=100, blank=True,
        help_text="The catalog model id to use instead: named in the 404 of a retired model, and what serves it "
                  "for organizations that remap retired models.")
    info_url = models.URLField(
        blank=True, help_text="A page about the deprecation, sent as Link: <url>; rel=\"deprecation\" (RFC 9745).")
    note = models.TextField(blank=True, help_text="Why, and the sources (staff only).")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model"]
        verbose_name = "model lifecycle"
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=["active", "deprecated", "retired"]),
                                   name="model_lifecycle_status_valid"),
            models.CheckConstraint(condition=models.Q(status="active") | models.Q(deprecated_at__isnull=False),
                                   name="model_lifecycle_deprecated_has_date"),
            models.CheckConstraint(condition=~models.Q(replacement=models.F("model")),
                                   name="model_lifecycle_not_its_own_replacement"),
        ]

    def __str__(self):
        return f"{self.model} ({self.status})"
