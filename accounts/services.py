"""Writes for accounts: organizations, memberships, API keys. Keyword-only, typed; views and commands call these."""
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from . import keys
from .models import ApiKey, Membership, Organization, User


def _unique_slug(base: str) -> str:
    base = (slugify(base) or "org")[:50]
    slug, n = base, 1
    while Organization.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@transaction.atomic
def create_organization(*, name: str, owner: User, slug: str | None = None) -> Organization:
    """A new tenant with `owner` as its owner."""
    organization = Organization.objects.create(name=name, slug=slug or _unique_slug(name))
    Membership.unscoped.create(organization=organization, user=owner, role=Membership.Role.OWNER)
    return organization


def get_or_create_user(*, email: str, password: str | None = None) -> tuple[User, bool]:
    """The user with this e-mail, created (with `password`, or unusable) if missing; an existing user's password is
    set only when one is given."""
    email = User.objects.normalize_email(email).lower()
    user = User.objects.filter(email__iexact=email).first()
    created = user is None
    if created:
        user = User.objects.create_user(email=email, password=password)
    elif password:
        user.set_password(password)
        user.save(update_fields=["password"])
    _mark_email_verified(user)
    return user, created


def _mark_email_verified(user: User) -> None:
    """Users made by operators (commands, the demo) have addresses we trust; record them as verified for allauth."""
    from allauth.account.models import EmailAddress

    EmailAddress.objects.update_or_create(
        user=user, email=user.email, defaults={"verified": True, "primary": True}
    )


@transaction.atomic
def ensure_organization(*, slug: str, owner: User, name: str | None = None) -> tuple[Organization, bool]:
    """Idempotent: the organization with `slug`, created if missing, with `owner` holding the owner role."""
    organization = Organization.objects.filter(slug=slug).first()
    created = organization is None
    if created:
        organization = Organization.objects.create(slug=slug, name=name or slug.replace("-", " ").title())
    Membership.unscoped.update_or_create(
        organization=organization, user=owner, defaults={"role": Membership.Role.OWNER}
    )
    return organization, created


def create_api_key(
    *, organization: Organization, name: str, created_by: User | None = None, rate_limit_rpm: int = 0
) -> tuple[ApiKey, str]:
    """A new key; returns the row and the raw key, which exists only in this return value."""
    name = (name or "").strip()
    if not name:
        raise ValueError("An API key needs a name.")
    if rate_limit_rpm < 0:
        raise ValueError("rate_limit_rpm cannot be negative.")
    for _ in range(5):
        prefix = keys.new_prefix()
        raw = keys.build_key(prefix)
        try:
            with transaction.atomic():
                api_key = ApiKey.unscoped.create(
                    organization=organization,
                    name=name[:100],
                    prefix=prefix,
                    secret_hash=keys.hash_key(raw),
                    created_by=created_by,
                    rate_limit_rpm=rate_limit_rpm,
                )
            return api_key, raw
        except IntegrityError:  # prefix collision: 62**8 makes this vanishingly rare; try another
            continue
    raise RuntimeError("Could not allocate a unique API key prefix.")


def revoke_api_key(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        ApiKey.unscoped.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=api_key.revoked_at)
    return api_key


def touch_api_key(*, api_key: ApiKey, now: datetime | None = None) -> bool:
    """Keep `last_used_at` fresh to within API_KEY_LAST_USED_RESOLUTION_SECONDS: at most one write per key per
    interval, and the conditional UPDATE makes concurrent requests write once. Returns True when it wrote."""
    now = now or timezone.now()
    resolution = timedelta(seconds=settings.API_KEY_LAST_USED_RESOLUTION_SECONDS)
    if api_key.last_used_at is not None and now - api_key.last_used_at < resolution:
        return False
    from django.db.models import Q

    written = ApiKey.unscoped.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - resolution), pk=api_key.pk
    ).update(last_used_at=now)
    api_key.last_used_at = now
    return bool(written)
