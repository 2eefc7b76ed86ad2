"""Prompts and error messages kept for the request log (issue 15): what a request said and what it was told.

* The prompt is kept for the organization's `prompt_retention_days` (30 by default; 0 keeps none), counted from
  the request. `purge_expired` (Celery: generation.tasks.purge_prompts, every 10 minutes) blanks the prompts past
  their time; a member who may manage data deletes one at once from the request's page (`delete_prompt`). Either
  way the row remembers when and why the prompt went, so the page can say so.
* The full error message of a failed request is our own text: it is kept as long as the request's row (the ledger
  keeps only the code). At most MAX_MESSAGE_CHARS.

The request path builds the unsaved row (`row_for`) and commits it with the ledger row (generation/pipeline/
commit.py), so it costs no extra transaction."""
from datetime import timedelta

from django.db.models import DateTimeField, ExpressionWrapper, F, Value
from django.utils import timezone

from accounts import services as account_services
from accounts.models import Organization

from .models import RequestText

MAX_MESSAGE_CHARS = 4000
PURGE_BATCH = 5000


def row_for(*, organization: Organization, request_id: str, prompt, error_message: str = "") -> RequestText | None:
    """The unsaved RequestText of a request, or None when there is nothing to keep (no prompt kept, no error).
    `prompt` is what the client sent (anything that is not a string is not kept)."""
    days = getattr(organization, "prompt_retention_days", 30) or 0
    keep_prompt = days > 0 and isinstance(prompt, str) and prompt != ""
    message = (error_message or "")[:MAX_MESSAGE_CHARS]
    if not keep_prompt and not message:
        return None
    now = timezone.now()
    return RequestText(
        organization_id=organization.pk, request_id=request_id, created_at=now,
        prompt=prompt.replace("\x00", "") if keep_prompt else "",
        prompt_expires_at=now + timedelta(days=days) if keep_prompt else None,
        error_message=message.replace("\x00", ""),
    )


def for_request(*, organization: Organization, request_id: str) -> RequestText | None:
    """The request's RequestText (its prompt blanked once past retention, even before the purge has run)."""
    text = RequestText.objects.for_organization(organization).filter(request_id=request_id).first()
    if text is not None and text.prompt and text.prompt_expires_at and text.prompt_expires_at <= timezone.now():
        text.prompt, text.prompt_deleted_reason = "", RequestText.Removal.EXPIRED
        text.prompt_deleted_at = text.prompt_expires_at
    return text


def delete_prompt(*, organization: Organization, request_id: str) -> bool:
    """Blank one request's prompt now (a customer's deletion). True if a prompt was deleted."""
    return bool(RequestText.objects.for_organization(organization).filter(request_id=request_id)
                .exclude(prompt="").update(prompt="", prompt_expires_at=None, prompt_deleted_at=timezone.now(),
                                           prompt_deleted_reason=RequestText.Removal.CUSTOMER))


def purge_expired(*, now=None, batch: int = PURGE_BATCH) -> int:
    """Blank every prompt past its retention, in batches of `batch` rows (every organization: a periodic job).
    Returns how many prompts were blanked."""
    now = now or timezone.now()
    total = 0
    while True:
        ids = list(RequestText.all_tenants_unsafe.filter(prompt_expires_at__lte=now)
                   .values_list("id", flat=True)[:batch])
        if not ids:
            return total
        total += RequestText.all_tenants_unsafe.filter(id__in=ids).update(
            prompt="", prompt_expires_at=None, prompt_deleted_at=now,
            prompt_deleted_reason=RequestText.Removal.EXPIRED)


def set_retention(*, organization: Organization, days: int) -> None:
    """Change how long the organization's prompts are kept; prompts already kept get the new limit (counted from
    their request), so shortening it removes what is now too old at the next purge."""
    account_services.set_prompt_retention(organization=organization, days=days)
    kept = RequestText.objects.for_organization(organization).exclude(prompt="")
    if days == 0:
        kept.update(prompt="", prompt_expires_at=None, prompt_deleted_at=timezone.now(),
                    prompt_deleted_reason=RequestText.Removal.CUSTOMER)
        return
    kept.update(prompt_expires_at=ExpressionWrapper(F("created_at") + Value(timedelta(days=days)),
                                                    output_field=DateTimeField()))
