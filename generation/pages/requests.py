"""Dashboard pages over the request log: the filtered log (keyset-paginated), one request's detail (its ledger row,
upstream attempts and still-live images) and the CSV export of the filtered log, streamed.

Here rather than in billing because the detail reads generation's attempts and images (billing never imports
generation). Ledger reads go through billing.selectors; every query is scoped to the member's organization."""
import itertools
from datetime import datetime, time, timedelta

from asgiref.sync import sync_to_async
from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts import roles
from accounts import services as account_services
from accounts.access import organization_page
from accounts.selectors import api_keys_for_organization
from billing import cursors, money
from billing import selectors as billing_selectors
from billing.exports import csv_lines
from billing.forms import UsageDateField
from billing.models import LedgerEntry
from generation import catalog, prompts
from generation.models import ProviderAttempt, StoredImage
from generation.pipeline import storage

PAGE_SIZE = 50
EXPORT_COLUMNS = ["created_at", "request_id", "api_key", "model", "provider", "size", "quality", "n", "status",
                  "error_code", "cost_micros", "cost_usd", "latency_ms"]


class RequestFilterForm(forms.Form):
    date_from = UsageDateField(required=False, label="From")
    date_to = UsageDateField(required=False, label="To")
    key = forms.ModelChoiceField(queryset=None, required=False, label="API key", empty_label="Any key")
    model = forms.CharField(required=False, max_length=100)
    provider = forms.CharField(required=False, max_length=50)
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *LedgerEntry.Status.choices])

    def __init__(self, data, *, organization):
        super().__init__(data)
        # Only this organization's keys are valid choices: another tenant's key id is a form error, never a filter.
        self.fields["key"].queryset = api_keys_for_organization(organization)
        self.fields["key"].label_from_instance = (
            lambda k: f"{k.name} ({k.prefix}…)" + (" revoked" if k.revoked_at else ""))

    def clean(self):
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise forms.ValidationError("The start date is after the end date.")
        return data

    def filters(self) -> billing_selectors.LogFilters:
        data = self.cleaned_data
        tz = timezone.get_current_timezone()
        start = datetime.combine(data["date_from"], time.min, tzinfo=tz) if data.get("date_from") else None
        end = (datetime.combine(data["date_to"] + timedelta(days=1), time.min, tzinfo=tz)
               if data.get("date_to") else None)
        return billing_selectors.LogFilters(
            start=start, end=end, api_key_id=data["key"].pk if data.get("key") else None,
            model=data.get("model", "").strip(), provider=data.get("provider", "").strip(),
            status=data.get("status", ""),
        )


def _filter_form(request, organization) -> RequestFilterForm:
    params = request.GET.copy()
    # The overview links here with ?from=&to=; the form's own names are date_from / date_to.
    for short, name in (("from", "date_from"), ("to", "date_to")):
        if short in params and name not in params:
            params[name] = params[short]
    return RequestFilterForm(params, organization=organization)


def _query_without(request, *names) -> str:
    params = request.GET.copy()
    for name in names:
        params.pop(name, None)
    return params.urlencode()


@organization_page(roles.VIEW_USAGE)
def request_log(request):
    organization = request.organization
    form = _filter_form(request, organization)
    entries, next_cursor = [], None
    status = 200
    if form.is_valid():
        try:
            after = cursors.decode_position(request.GET["after"]) if request.GET.get("after") else None
        except ValueError:
            return HttpResponseBadRequest("Invalid page cursor.")
        rows = billing_selectors.request_log(organization=organization, filters=form.filters())
        entries, next_cursor = billing_selectors.request_log_page(rows, after=after, limit=PAGE_SIZE)
    else:
        status = 400
    base_query = _query_without(request, "after")
    return render(request, "dashboard/requests.html", {
        "form": form,
        "retention_form": RetentionForm(initial={"prompt_retention_days": organization.prompt_retention_days}),
        "model_ids": catalog.MODELS,
        "image_ttl_minutes": settings.IMAGE_URL_TTL_SECONDS // 60,
        "entries": entries,
        "next_query": (f"{base_query}&" if base_query else "") + f"after={cursors.encode_position(*next_cursor)}"
                      if next_cursor else "",
        "first_query": base_query,
        "is_first_page": not request.GET.get("after"),
        "export_query": base_query,
    }, status=status)


class RetentionForm(forms.Form):
    prompt_retention_days = forms.IntegerField(
        min_value=0, max_value=account_services.MAX_PROMPT_RETENTION_DAYS, label="Keep prompts for (days)",
        help_text="0 stores no prompts. Prompts older than this are deleted within 10 minutes.")


@organization_page(roles.VIEW_USAGE)
def request_detail(request, request_id: str):
    organization = request.organization
    entry = billing_selectors.request_entry(organization=organization, request_id=request_id)
    if entry is None:
        raise Http404("No such request.")
    return render(request, "dashboard/request_detail.html", {
        "entry": entry, **request_record(organization, entry),
        "retention_days": organization.prompt_retention_days,
    })


def request_record(organization, entry) -> dict:
    """What the detail page shows beside the ledger row: {"attempts": [ProviderAttempt], "text": RequestText |
    None, "images": [{"stored", "url"}] still live, "images_expired": int made but past their expiry,
    "image_ttl_minutes": int}."""
    now = timezone.now()
    request_id = entry.request_id
    attempts = ProviderAttempt.objects.for_organization(organization).filter(request_id=request_id).order_by("attempt")
    stored = list(StoredImage.objects.for_organization(organization).filter(request_id=request_id).order_by("index"))
    live = [image for image in stored if image.deleted_at is None and image.expires_at > now]
    return {
        "attempts": list(attempts),
        "text": prompts.for_request(organization=organization, request_id=request_id),
        "images": [{"stored": image, "url": storage.signed_path(image)} for image in live],
        "images_expired": len(stored) - len(live),
        "image_ttl_minutes": settings.IMAGE_URL_TTL_SECONDS // 60,
    }


@require_POST
@organization_page(roles.MANAGE_DATA)
def delete_prompt(request, request_id: str):
    if billing_selectors.request_entry(organization=request.organization, request_id=request_id) is None:
        raise Http404("No such request.")
    if prompts.delete_prompt(organization=request.organization, request_id=request_id):
        messages.success(request, "The prompt of this request is deleted.")
    return redirect("request-detail", request_id=request_id)


@require_POST
@organization_page(roles.MANAGE_DATA)
def prompt_retention(request):
    form = RetentionForm(request.POST)
    if form.is_valid():
        prompts.set_retention(organization=request.organization, days=form.cleaned_data["prompt_retention_days"])
        days = form.cleaned_data["prompt_retention_days"]
        messages.success(request, f"Prompts are now kept for {days} days." if days else "Prompts are no longer kept.")
    else:
        messages.error(request, " ".join(e for errors in form.errors.values() for e in errors))
    return redirect("request-log")


def _csv_lines(rows):
    return csv_lines(EXPORT_COLUMNS, (
        [created_at.isoformat(), request_id, key_name or "", model, provider, size, quality, n, status, error_code,
         cost, money.exact(cost), latency]
        for created_at, request_id, key_name, model, provider, size, quality, n, status, error_code, cost, latency
        in rows))


async def _async_chunks(lines, lines_per_chunk: int = 500):
    """Under ASGI, Django would read a sync iterator to the end before sending anything; this hands the rows over in
    chunks, each read on the request's own thread (the server-side cursor's connection)."""
    iterator = iter(lines)
    next_chunk = sync_to_async(lambda: "".join(itertools.islice(iterator, lines_per_chunk)), thread_sensitive=True)
    while True:
        chunk = await next_chunk()
        if not chunk:
            return
        yield chunk


@organization_page(roles.VIEW_USAGE)
def request_export(request):
    organization = request.organization
    form = _filter_form(request, organization)
    if not form.is_valid():
        return HttpResponseBadRequest("Invalid filters: " + "; ".join(
            f"{field}: {' '.join(errors)}" for field, errors in form.errors.items()))
    rows = billing_selectors.request_log(organization=organization, filters=form.filters())
    lines = _csv_lines(billing_selectors.request_log_rows_for_export(rows))
    content = _async_chunks(lines) if isinstance(request, ASGIRequest) else lines
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="imagegate-requests-{organization.slug}-{stamp}.csv"'
    return response
