"""Writes for accounts: organizations, memberships, API keys. Keyword-only, typed; views and commands call these."""
import re
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.dispatch import Signal
from django.utils import timezone
from django.utils.text import slugify

from config import process_cache

from . import identity, keys, model_catalog, roles
from .models import ApiKey, Invitation, Membership, Organization, User

# Sent after a key is rotated, with `old_key` and `new_key`: apps that keep per-key state accounts cannot see (billing's
# per-key spend limit) connect here to carry it over. Accounts imports nothing of theirs.
api_key_rotated = Signal()

ROTATION_GRACE = timedelta(hours=24)
MAX_ALLOWED_MODELS = 50
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}$")


class TeamError(Exception):
    """A team change the rules forbid (the last owner, an already-used invitation); the message says why."""


class NotAllowed(TeamError):
    """The acting member's role does not allow this change (the view answers 403)."""


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
    Membership.objects.for_organization(organization).create(organization=organization, user=owner,
                                                             role=Membership.Role.OWNER)
    return organization


def get_or_create_user(*, email: str, password: str | None = None) -> tuple[User, bool]:
    """The user with this e-mail, created (with `password`, or unusable) if missing; an existing user's password is
    set only when one is given."""
    email = identity.normalize_email(email)
    if not email or "@" not in email:
        raise ValueError("An e-mail address is required.")
    user = User.objects.filter(email=email).first()
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
    Membership.objects.for_organization(organization).update_or_create(
        organization=organization, user=owner, defaults={"role": Membership.Role.OWNER}
    )
    return organization, created


def normalize_allowed_models(models: list[str] | tuple[str, ...] | None) -> list[str]:
    """Model ids as stored: stripped, de-duplicated in order; each must look like a model id and be in the catalog
    that generation registers (accounts/model_catalog.py). ValueError names the first bad id and, for a misspelt
    one, the nearest catalog id."""
    out: list[str] = []
    for model in models or []:
        model = str(model).strip()
        if not model:
            continue
        if not _MODEL_ID.match(model):
            raise ValueError(f"'{model[:40]}' is not a model id (letters, digits and . _ : / @ + -).")
        if (problem := model_catalog.problem(model)) is not None:
            raise ValueError(problem)
        if model not in out:
            out.append(model)
    if len(out) > MAX_ALLOWED_MODELS:
        raise ValueError(f"At most {MAX_ALLOWED_MODELS} models can be listed.")
    return out


def create_api_key(
    *, organization: Organization, name: str, created_by: User | None = None, rate_limit_rpm: int = 0,
    expires_at: datetime | None = None, allowed_models: list[str] | None = None, lineage: int | None = None,
    scopes: list[str] | None = None, max_cost_micros: int | None = None,
) -> tuple[ApiKey, str]:
    """A new key; returns the row and the raw key, which exists only in this return value. `max_cost_micros` is
    the key's default price ceiling per request (micro-USD; None or 0: none)."""
    name = (name or "").strip()
    if not name:
        raise ValueError("An API key needs a name.")
    if rate_limit_rpm < 0:
        raise ValueError("rate_limit_rpm cannot be negative.")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("The expiry must be in the future.")
    if max_cost_micros is not None and max_cost_micros < 0:
        raise ValueError("max_cost cannot be negative.")
    allowed_models = normalize_allowed_models(allowed_models)
    scopes = keys.normalize_scopes(keys.all_scopes() if scopes is None else scopes)
    for _ in range(5):
        prefix = keys.new_prefix()
        raw = keys.build_key(prefix)
        try:
            with transaction.atomic():
                api_key = ApiKey.objects.for_organization(organization).create(
                    organization=organization,
                    name=name[:100],
                    prefix=prefix,
                    secret_hash=keys.hash_key(raw),
                    created_by=created_by,
                    rate_limit_rpm=rate_limit_rpm,
                    expires_at=expires_at,
                    allowed_models=allowed_models,
                    lineage=lineage,
                    scopes=scopes,
                    max_cost_micros=max_cost_micros or None,
                )
            return api_key, raw
        except IntegrityError:  # prefix collision: 62**8 makes this vanishingly rare; try another
            continue
    raise RuntimeError("Could not allocate a unique API key prefix.")


def revoke_api_key(*, api_key: ApiKey) -> ApiKey:
    """Revoke at once: every serving process refuses the key within a second."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        (ApiKey.objects.for_organization(api_key.organization_id).filter(pk=api_key.pk, revoked_at__isnull=True)
         .update(revoked_at=api_key.revoked_at))
        process_cache.invalidate("api_keys")
    return api_key


@transaction.atomic
def rotate_api_key(
    *, api_key: ApiKey, created_by: User | None = None, revoke_old: bool = False,
    grace: timedelta = ROTATION_GRACE, now: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key with the old one's name (+ " (rotated)"), rate limit, expiry and allowed models. The old key is
    revoked at once (`revoke_old`) or keeps working for `grace` (its expiry is brought forward, never pushed back).
    Returns the new row and its raw key, shown once."""
    now = now or timezone.now()
    old = ApiKey.objects.for_organization(api_key.organization_id).select_for_update().get(pk=api_key.pk)
    if old.is_revoked or old.is_expired(now):
        raise ValueError("Only an active key can be rotated.")
    suffix = " (rotated)"
    name = old.name if old.name.endswith(suffix) else old.name[: 100 - len(suffix)] + suffix
    new_key, raw = create_api_key(
        organization=old.organization, name=name, created_by=created_by, rate_limit_rpm=old.rate_limit_rpm,
        expires_at=old.expires_at, allowed_models=list(old.allowed_models or []), lineage=old.lineage_id,
        max_cost_micros=old.max_cost_micros,
        scopes=list(old.scopes or keys.all_scopes()),
    )
    if revoke_old:
        ApiKey.objects.for_organization(old.organization_id).filter(pk=old.pk, revoked_at__isnull=True).update(
            revoked_at=now)
    else:
        grace_end = now + grace
        if old.expires_at is None or old.expires_at > grace_end:
            ApiKey.objects.for_organization(old.organization_id).filter(pk=old.pk).update(expires_at=grace_end)
    api_key.refresh_from_db(fields=["revoked_at", "expires_at"])
    process_cache.invalidate("api_keys")
    transaction.on_commit(lambda: api_key_rotated.send(sender=ApiKey, old_key=api_key, new_key=new_key))
    return new_key, raw


def touch_due(api_key: ApiKey, now: datetime) -> bool:
    """Whether `touch_api_key` would write (no query: the key's last_used_at as this process knows it)."""
    resolution = timedelta(seconds=settings.API_KEY_LAST_USED_RESOLUTION_SECONDS)
    return api_key.last_used_at is None or now - api_key.last_used_at >= resolution


def touch_api_key(*, api_key: ApiKey, now: datetime | None = None) -> bool:
    """Keep `last_used_at` fresh to within API_KEY_LAST_USED_RESOLUTION_SECONDS: at most one write per key per
    interval, and the conditional UPDATE makes concurrent requests write once. Returns True when it wrote."""
    now = now or timezone.now()
    resolution = timedelta(seconds=settings.API_KEY_LAST_USED_RESOLUTION_SECONDS)
    if api_key.last_used_at is not None and now - api_key.last_used_at < resolution:
        return False
    from django.db.models import Q

    written = ApiKey.objects.for_organization(api_key.organization_id).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - resolution), pk=api_key.pk
    ).update(last_used_at=now)
    api_key.last_used_at = now
    return bool(written)


# --- Team: invitations, roles, removal -------------------------------------------------------------------------------

def _lock_owners(organization: Organization) -> list[Membership]:
    """Lock the organization's owner rows so two concurrent demotions cannot both pass the last-owner check."""
    return list(Membership.objects.for_organization(organization).select_for_update()
                .filter(role=Membership.Role.OWNER).order_by("pk"))


def _require_manager(actor: Membership, organization: Organization) -> None:
    if actor.organization_id != organization.pk or not actor.has_perm(roles.MANAGE_TEAM):
        raise NotAllowed("Only owners and admins can change the team.")


@transaction.atomic
def invite_member(
    *, organization: Organization, email: str, role: str, invited_by: Membership, now: datetime | None = None,
) -> tuple[Invitation, str]:
    """A pending invitation (replacing an earlier pending one for the same address) and its raw token, which exists
    only in this return value and the e-mailed link. Owners may invite with any role; admins, admins and members."""
    _require_manager(invited_by, organization)
    if role not in Membership.Role.values:
        raise ValueError(f"Unknown role '{role}'.")
    if role == Membership.Role.OWNER and invited_by.role != Membership.Role.OWNER:
        raise NotAllowed("Only owners can invite owners.")
    email = identity.normalize_email(email)
    if not email or "@" not in email:
        raise ValueError("An e-mail address is required.")
    if Membership.objects.for_organization(organization).filter(user__email=email).exists():
        raise TeamError(f"{email} is already a member of {organization.name}.")
    now = now or timezone.now()
    Invitation.objects.for_organization(organization).filter(email=email, accepted_at__isnull=True).delete()
    raw = secrets.token_urlsafe(32)
    invitation = Invitation.objects.for_organization(organization).create(
        organization=organization, email=email, role=role, token_hash=keys.hash_key(raw),
        invited_by=invited_by.user, expires_at=now + timedelta(days=Invitation.TTL_DAYS),
    )
    return invitation, raw


def send_invitation_email(*, invitation: Invitation, accept_url: str) -> None:
    inviter = invitation.invited_by.email if invitation.invited_by else "A team owner"
    send_mail(
        subject=f"You are invited to join {invitation.organization.name} on Imagegate",
        message=(
            f"{inviter} invited you to join {invitation.organization.name} on Imagegate as "
            f"{invitation.get_role_display().lower()}.\n\n"
            f"Accept the invitation here (the link works for {Invitation.TTL_DAYS} days):\n{accept_url}\n\n"
            f"Sign in (or sign up) with this address, {invitation.email}, to accept. If you did not expect this, "
            "ignore this e-mail."
        ),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[invitation.email],
    )


@transaction.atomic
def revoke_invitation(*, invitation: Invitation, actor: Membership) -> None:
    _require_manager(actor, invitation.organization)
    if invitation.role == Membership.Role.OWNER and actor.role != Membership.Role.OWNER:
        raise NotAllowed("Only owners can withdraw an owner's invitation.")
    Invitation.objects.for_organization(invitation.organization).filter(pk=invitation.pk).delete()


@transaction.atomic
def accept_invitation(*, invitation: Invitation, user: User, now: datetime | None = None) -> Membership:
    """Make `user` a member with the invitation's role. The user's e-mail must be the invited address. Someone who is
    already a member keeps their role."""
    now = now or timezone.now()
    invitation = (Invitation.objects.for_organization(invitation.organization_id).select_for_update()
                  .select_related("organization").get(pk=invitation.pk))
    if invitation.accepted_at is not None:
        raise TeamError("This invitation has already been used.")
    if invitation.is_expired(now):
        raise TeamError("This invitation has expired. Ask for a new one.")
    if identity.normalize_email(user.email) != identity.normalize_email(invitation.email):
        raise NotAllowed(f"This invitation is for {invitation.email}; you are signed in as {user.email}.")
    membership, _ = Membership.objects.for_organization(invitation.organization_id).get_or_create(
        organization=invitation.organization, user=user, defaults={"role": invitation.role})
    invitation.accepted_at, invitation.accepted_by = now, user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    return membership


@transaction.atomic
def change_role(*, membership: Membership, role: str, actor: Membership) -> Membership:
    """Owners set any role; admins move people between admin and member but cannot touch owners; the last owner
    cannot be demoted."""
    _require_manager(actor, membership.organization)
    if role not in Membership.Role.values:
        raise ValueError(f"Unknown role '{role}'.")
    owners = _lock_owners(membership.organization)
    membership = (Membership.objects.for_organization(membership.organization_id).select_for_update()
                  .get(pk=membership.pk))
    if actor.role != Membership.Role.OWNER and Membership.Role.OWNER in (role, membership.role):
        raise NotAllowed("Only owners can make owners or change an owner's role.")
    if membership.role == role:
        return membership
    if membership.role == Membership.Role.OWNER and len(owners) <= 1:
        raise TeamError("The organization's last owner cannot be demoted. Make someone else an owner first.")
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def remove_member(*, membership: Membership, actor: Membership) -> None:
    """Owners and admins remove people (admins cannot remove owners); anyone can leave; the last owner stays."""
    leaving = actor.pk == membership.pk
    if not leaving:
        _require_manager(actor, membership.organization)
    owners = _lock_owners(membership.organization)
    membership = (Membership.objects.for_organization(membership.organization_id).select_for_update()
                  .get(pk=membership.pk))
    if membership.role == Membership.Role.OWNER:
        if not leaving and actor.role != Membership.Role.OWNER:
            raise NotAllowed("Only owners can remove an owner.")
        if len(owners) <= 1:
            raise TeamError("The organization's last owner cannot be removed or leave. "
                            "Make someone else an owner first.")
    membership.delete()


MAX_PROMPT_RETENTION_DAYS = 365


def set_prompt_retention(*, organization: Organization, days: int) -> None:
    """How many days the organization's prompts are kept for its request log (0 = none are stored). ValueError
    outside 0..MAX_PROMPT_RETENTION_DAYS. generation/prompts.py applies it to the prompts already kept."""
    if not 0 <= int(days) <= MAX_PROMPT_RETENTION_DAYS:
        raise ValueError(f"Prompts are kept for 0 to {MAX_PROMPT_RETENTION_DAYS} days.")
    Organization.objects.filter(pk=organization.pk).update(prompt_retention_days=int(days))
    organization.prompt_retention_days = int(days)
    process_cache.invalidate("api_keys")  # the API's cached organizations learn it within a second


def set_remap_retired_models(*, organization: Organization, enabled: bool) -> Organization:
    """Turn remapping of retired models on or off for `organization` (generation/lifecycle.py reads it from the
    per-process key cache, which the save drops in every process within a second)."""
    organization.remap_retired_models = bool(enabled)
    organization.save(update_fields=["remap_retired_models"])
    return organization
