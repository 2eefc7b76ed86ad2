from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from . import identity, keys
from .tenancy import TenantManager


class UserManager(BaseUserManager):
    use_in_migrations = True

    @classmethod
    def normalize_email(cls, email):
        """accounts/identity.py's rule (Django's own lower-cases only the domain)."""
        return identity.normalize_email(email)

    def _create_user(self, email, password, **extra_fields):
        if not email:
            raise ValueError("An e-mail address is required.")
        user = self.model(email=self.normalize_email(email), **extra_fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra_fields):
        extra_fields.setdefault("is_staff", False)
        extra_fields.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra_fields)

    def create_superuser(self, email, password=None, **extra_fields):
        extra_fields.setdefault("is_staff", True)
        extra_fields.setdefault("is_superuser", True)
        return self._create_user(email, password, **extra_fields)


class User(AbstractBaseUser, PermissionsMixin):
    """A person. Logs in with an e-mail address; belongs to organizations through memberships."""

    email = models.EmailField("e-mail address", unique=True)
    name = models.CharField(max_length=150, blank=True)
    is_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["email"]
        constraints = [
            # Addresses are stored normalized (accounts/identity.py); this guards rows written around it.
            models.UniqueConstraint(Lower("email"), name="uniq_user_email_ci"),
        ]

    def __str__(self):
        return self.email

    def get_full_name(self):
        return self.name or self.email

    def get_short_name(self):
        return self.name or self.email.split("@")[0]


class Organization(models.Model):
    """The tenant: owns API keys, usage and billing."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=63, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Requests per minute across all of the organization's keys; 0 = no organization-wide limit.
    rate_limit_rpm = models.PositiveIntegerField(default=0)
    # Days a request's prompt is kept for the request log (generation/prompts.py); 0 = prompts are not stored.
    prompt_retention_days = models.PositiveSmallIntegerField(default=30)
    # On: a request for a retired model is served by its replacement, at the replacement's price, with an
    # x-model-remapped header (generation/lifecycle.py). Off (default): 404 model_not_found naming the replacement.
    remap_retired_models = models.BooleanField(
        default=False, help_text="Serve requests for retired models with their replacement (at its price).")

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "user"], name="uniq_membership")]
        ordering = ["created_at"]

    def __str__(self):
        return f"{self.user} in {self.organization} ({self.role})"

    def has_perm(self, permission: str) -> bool:
        """Whether this member's role grants `permission` (accounts/roles.py: what each role may do)."""
        from .roles import ROLE_PERMISSIONS

        return permission in ROLE_PERMISSIONS.get(self.role, frozenset())


class ApiKey(models.Model):
    """An organization's API key. Only a SHA-256 digest of the secret is stored; the raw key is shown once."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    # The public part of the key (e.g. "ig_Ab3dE6gH"), unique, used to find the row before the hash is compared.
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Requests per minute for this key; 0 = the product default.
    rate_limit_rpm = models.PositiveIntegerField(default=0)
    # After this instant the key is refused (401 invalid_api_key, "expired"); null = never expires.
    expires_at = models.DateTimeField(null=True, blank=True)
    # Model ids this key may use; empty = every model. Checked on the generation path (accounts.selectors).
    allowed_models = models.JSONField(default=list, blank=True)
    # A default price ceiling for every request made with this key (micro-USD per request; null: none). A request's
    # own `max_cost` overrides it; over it the request is refused with 400 cost_limit_exceeded before any upstream.
    max_cost_micros = models.BigIntegerField(null=True, blank=True)
    # What the key may do (accounts/keys.py SCOPES); every scope unless restricted when created.
    scopes = models.JSONField(default=keys.all_scopes)
    # The first key of a rotation chain (null: this key is the first). A rotated key inherits its predecessor's, so
    # per-key monthly spend carries over to the new key (billing/spend.py counts per lineage).
    lineage = models.BigIntegerField(null=True, blank=True, db_index=True)

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, now=None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    @property
    def is_active(self) -> bool:
        """Usable right now: neither revoked nor expired."""
        return self.revoked_at is None and not self.is_expired()

    def has_scope(self, scope: str) -> bool:
        return scope in (self.scopes or [])

    @property
    def lineage_id(self) -> int:
        """The id that rotations of this key share: the first key's."""
        return self.lineage or self.pk


class Invitation(models.Model):
    """An invitation to join an organization with a role, sent by e-mail. Only a SHA-256 of the token is stored; the
    raw token exists in the e-mailed link."""

    TTL_DAYS = 7

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField("e-mail address")
    role = models.CharField(max_length=10, choices=Membership.Role.choices, default=Membership.Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")

    all_tenants_unsafe = models.Manager()
    objects = TenantManager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.email} to {self.organization} ({self.role})"

    def is_expired(self, now=None) -> bool:
        return self.expires_at <= (now or timezone.now())

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and not self.is_expired()
