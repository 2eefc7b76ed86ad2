"""Staff audit of billing: the ledger (read-only, filtered totals, streamed CSV), Stripe reporting per window,
reconciliation discrepancies, webhook events, invoices, alerts, prices (append-only) and spend limits.

Money is integer micro-USD; it is shown in dollars by exact decimal formatting, never through floats. Every custom
action writes an audit row (accounts.admin_audit); the admin itself logs adds, changes and deletes."""
import json

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.paginator import Paginator
from django.db import connection
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html

from accounts.admin_audit import log_staff_action

from . import money
from .exports import csv_lines
from .models import (
    BillingAccount,
    BillingAlert,
    Discrepancy,
    Invoice,
    LedgerEntry,
    MeterReport,
    Price,
    SpendAlert,
    StripeEvent,
)
from .selectors import clear_price_cache
from .usage import reader

# Above this many rows (PostgreSQL's estimate) an unfiltered ledger list neither counts exactly nor totals: staff
# narrow by organization, date or another filter first.
UNFILTERED_EXACT_LIMIT = 1_000_000
KNOWN_PROVIDERS = ["local", "openai", "openai_compatible", "stability", "bfl", "replicate", "bedrock", "gemini",
                   "recraft", "ideogram"]
KNOWN_ENDPOINTS = ["generations", "edits", "variations"]
CSV_HEADER = [
    "created_at", "request_id", "organization", "api_key_prefix", "endpoint", "model", "provider", "size", "quality",
    "n", "status", "error_code", "unit_price_micros", "cost_micros", "cost_usd", "upstream_cost_micros", "latency_ms",
    "sequence", "entry_hash",
]




def _estimated_rows(model) -> int | None:
    """PostgreSQL's planner estimate of a table's rows (no scan); None elsewhere."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [model._meta.db_table])
        row = cursor.fetchone()
    return max(int(row[0]), 0) if row else None


def _is_unfiltered(queryset) -> bool:
    return not queryset.query.where


def _too_big_unfiltered(queryset) -> bool:
    if not _is_unfiltered(queryset):
        return False
    estimate = _estimated_rows(queryset.model)
    return estimate is not None and estimate > UNFILTERED_EXACT_LIMIT


class EstimatingPaginator(Paginator):
    """Counts exactly, except an unfiltered huge table, whose page count comes from the planner's estimate."""

    @cached_property
    def count(self):
        if _is_unfiltered(self.object_list):
            estimate = _estimated_rows(self.object_list.model)
            if estimate is not None and estimate > UNFILTERED_EXACT_LIMIT:
                return estimate
        return super().count


def values_filter(parameter: str, title: str, values):
    """A list filter on a string column whose choices come from `values()` (not a DISTINCT over the ledger)."""

    class ValuesFilter(admin.SimpleListFilter):
        parameter_name = parameter

        def lookups(self, request, model_admin):
            return [(v, v) for v in values()]

        def queryset(self, request, queryset):
            value = self.value()
            return queryset.filter(**{parameter: value}) if value else queryset

    ValuesFilter.title = title
    return ValuesFilter


def _price_models():
    return list(Price.objects.order_by("model").values_list("model", flat=True).distinct())


class ReadOnlyAdmin(admin.ModelAdmin):
    """View only: no add, change or delete (so no delete action); every field is shown read-only."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]


def stream_ledger_csv(queryset, filename: str) -> StreamingHttpResponse:
    rows = queryset.order_by("created_at", "id").values_list(
        "created_at", "request_id", "organization__slug", "api_key__prefix", "endpoint", "model", "provider", "size",
        "quality", "n", "status", "error_code", "unit_price_micros", "cost_micros", "upstream_cost_micros",
        "latency_ms", "seal__sequence", "seal__entry_hash",
    )
    lines = csv_lines(CSV_HEADER, (
        [created_at.isoformat(), request_id, org, prefix or "", endpoint, model, provider, size, quality, n, status,
         error_code, unit, cost, money.exact(cost), "" if upstream is None else upstream, latency,
         "" if sequence is None else sequence, entry_hash or ""]
        for (created_at, request_id, org, prefix, endpoint, model, provider, size, quality, n, status, error_code,
             unit, cost, upstream, latency, sequence, entry_hash) in rows.iterator(chunk_size=2000)))
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "request_id", "organization", "endpoint", "model", "provider", "size", "n",
                    "status", "cost", "latency_ms"]
    list_filter = [
        "organization",
        values_filter("model", "model", _price_models),
        values_filter("provider", "provider", lambda: KNOWN_PROVIDERS),
        "status",
        values_filter("endpoint", "endpoint", lambda: KNOWN_ENDPOINTS),
    ]
    date_hierarchy = "created_at"
    search_fields = ["=request_id"]
    list_select_related = ["organization"]
    show_full_result_count = False
    paginator = EstimatingPaginator
    list_per_page = 100
    actions = ["export_selected_csv"]
    fields = ["created_at", "request_id", "organization", "api_key", "endpoint", "model", "served_model", "provider",
              "size",
              "quality", "n", "price", "unit_price_micros", "cost_micros", "cost", "upstream_cost_micros",
              "latency_ms", "status", "error_code", "sequence", "prev_hash", "entry_hash"]

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def _seal(self, obj):
        from django.core.exceptions import ObjectDoesNotExist

        try:
            return obj.seal
        except ObjectDoesNotExist:
            return None

    @admin.display(description="sequence")
    def sequence(self, obj):
        seal = self._seal(obj)
        return seal.sequence if seal else "waiting for the sealer"

    @admin.display(description="prev hash")
    def prev_hash(self, obj):
        seal = self._seal(obj)
        return seal.prev_hash if seal else "—"

    @admin.display(description="entry hash")
    def entry_hash(self, obj):
        seal = self._seal(obj)
        return seal.entry_hash if seal else "—"

    @admin.display(description="cost (USD)", ordering="cost_micros")
    def cost(self, obj):
        return f"${money.exact(obj.cost_micros)}"

    def get_urls(self):
        info = self.model._meta.app_label, self.model._meta.model_name
        return [
            path("export.csv", self.admin_site.admin_view(self.export_csv_view), name="{}_{}_export_csv".format(*info)),
            *super().get_urls(),
        ]

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        paginator = super().get_paginator(request, queryset, per_page, orphans, allow_empty_first_page)
        totals = reader.changelist_totals(request.GET, queryset)
        if totals is not None:  # the exact count without COUNT(*) over millions of ledger rows
            request._ledger_rollup_totals = totals
            paginator.count = totals["requests"]
        return paginator

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context and "cl" in context:
            queryset = context["cl"].queryset
            rolled = getattr(request, "_ledger_rollup_totals", None)
            if rolled is not None:
                totals = dict(rolled)
                totals["cost_usd"] = money.exact(totals["cost_micros"])
                context["ledger_totals"] = totals
            elif _too_big_unfiltered(queryset):
                context["ledger_totals"] = None
            else:
                totals = reader.Source(False, queryset).totals()
                totals["cost_usd"] = money.exact(totals["cost_micros"])
                context["ledger_totals"] = totals
            context["export_csv_url"] = reverse("admin:billing_ledgerentry_export_csv")
        return response

    def export_csv_view(self, request):
        """The changelist's filtered set (same query string: filters, search, date drill-down), streamed."""
        if not self.has_view_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            self.message_user(request, "Those filters are not valid.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:billing_ledgerentry_changelist"))
        query = request.GET.urlencode()
        log_staff_action(request, model=LedgerEntry, object_repr="ledger CSV export",
                         message=f"Exported the ledger as CSV (filters: {query or 'none'}).")
        return stream_ledger_csv(changelist.queryset, self._filename())

    @admin.action(description="Export selected to CSV")
    def export_selected_csv(self, request, queryset):
        log_staff_action(request, model=LedgerEntry, object_repr="ledger CSV export",
                         message="Exported selected ledger rows as CSV.")
        return stream_ledger_csv(queryset, self._filename())

    @staticmethod
    def _filename():
        return f"ledger-{timezone.now():%Y%m%d-%H%M%S}.csv"


@admin.register(MeterReport)
class MeterReportAdmin(ReadOnlyAdmin):
    list_display = ["identifier", "organization", "window_start", "window_end", "value", "status", "attempts",
                    "next_attempt_at", "delivered_at", "short_error"]
    list_filter = ["status", "organization"]
    date_hierarchy = "window_start"
    search_fields = ["=identifier", "stripe_customer_id"]
    list_select_related = ["organization"]
    show_full_result_count = False
    ordering = ["-window_start", "-id"]

    @admin.display(description="value (USD)", ordering="value_micros")
    def value(self, obj):
        return f"${money.exact(obj.value_micros)}"

    @admin.display(description="last error")
    def short_error(self, obj):
        return (obj.last_error[:80] + "…") if len(obj.last_error) > 80 else obj.last_error


@admin.register(Discrepancy)
class DiscrepancyAdmin(admin.ModelAdmin):
    list_display = ["organization", "window_start", "window_end", "ledger", "reported", "stripe", "difference",
                    "detected_at", "resolved_at"]
    list_filter = [("resolved_at", admin.EmptyFieldListFilter), "organization"]
    list_select_related = ["organization"]
    date_hierarchy = "window_start"
    readonly_fields = ["organization", "window_start", "window_end", "ledger_micros", "reported_micros",
                       "stripe_micros", "detected_at"]
    fields = [*readonly_fields, "resolved_at", "note"]
    actions = ["mark_resolved"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="ledger (USD)", ordering="ledger_micros")
    def ledger(self, obj):
        return money.exact(obj.ledger_micros)

    @admin.display(description="reported (USD)", ordering="reported_micros")
    def reported(self, obj):
        return money.exact(obj.reported_micros)

    @admin.display(description="Stripe (USD)", ordering="stripe_micros")
    def stripe(self, obj):
        return money.exact(obj.stripe_micros)

    @admin.display(description="ledger − Stripe (USD)")
    def difference(self, obj):
        return money.exact(obj.ledger_micros - obj.stripe_micros)

    @admin.action(description="Mark selected resolved", permissions=["change"])
    def mark_resolved(self, request, queryset):
        now = timezone.now()
        done = 0
        for discrepancy in queryset.filter(resolved_at__isnull=True):
            discrepancy.resolved_at = now
            discrepancy.save(update_fields=["resolved_at"])
            log_staff_action(request, obj=discrepancy, message="Marked resolved.")
            done += 1
        self.message_user(request, f"Resolved {done}.")


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "type", "received_at", "processed_at", "error"]
    list_filter = ["type", ("processed_at", admin.EmptyFieldListFilter)]
    search_fields = ["=event_id"]
    date_hierarchy = "received_at"
    show_full_result_count = False
    fields = ["event_id", "type", "received_at", "processed_at", "error", "pretty_payload"]

    class Media:
        css = {"all": ["css/admin.css"]}  # pre.payload (no inline styles under the Content-Security-Policy)

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    @admin.display(description="payload")
    def pretty_payload(self, obj):
        return format_html("<pre class='payload'>{}</pre>",
                           json.dumps(obj.payload, indent=2, sort_keys=True))


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    list_display = ["stripe_invoice_id", "number", "organization", "status", "amount_due", "amount_paid", "currency",
                    "period_start", "period_end", "created"]
    list_filter = ["status", "organization"]
    search_fields = ["=stripe_invoice_id", "number"]
    list_select_related = ["organization"]
    date_hierarchy = "created"


@admin.register(BillingAlert)
class BillingAlertAdmin(admin.ModelAdmin):
    list_display = ["created_at", "kind", "organization", "message", "resolved_at"]
    list_filter = ["kind", ("resolved_at", admin.EmptyFieldListFilter)]
    list_select_related = ["organization"]
    search_fields = ["message"]
    readonly_fields = ["organization", "kind", "message", "created_at", "resolved_at"]
    actions = ["resolve_selected"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Resolve selected alerts", permissions=["change"])
    def resolve_selected(self, request, queryset):
        now = timezone.now()
        done = 0
        for alert in queryset.filter(resolved_at__isnull=True):
            alert.resolved_at = now
            alert.save(update_fields=["resolved_at"])
            log_staff_action(request, obj=alert, message="Resolved.")
            done += 1
        self.message_user(request, f"Resolved {done} alert{'s' if done != 1 else ''}.")


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    """Prices are data: a new price is a new row with a later effective date. A price that some ledger row was
    charged at can be neither changed nor deleted."""

    list_display = ["model", "size", "quality", "unit_price", "unit_price_micros", "effective_from", "created_at"]
    list_filter = ["model", "quality"]
    search_fields = ["model"]
    date_hierarchy = "effective_from"
    fields = ["model", "size", "quality", "unit_price_micros", "effective_from"]

    @admin.display(description="unit price (USD)", ordering="unit_price_micros")
    def unit_price(self, obj):
        return f"${money.exact(obj.unit_price_micros)}"

    @staticmethod
    def _used(obj) -> bool:
        return LedgerEntry.all_tenants_unsafe.filter(price=obj).exists()

    def has_change_permission(self, request, obj=None):
        if obj is not None and self._used(obj):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and self._used(obj):
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # bulk delete cannot check each row's use; delete one at a time
        return actions

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        clear_price_cache()  # every process picks the new row up within a second


@admin.register(BillingAccount)
class BillingAccountAdmin(admin.ModelAdmin):
    list_display = ["organization", "subscription_status", "stripe_customer_id", "spend_limit", "past_due_since",
                    "current_period_end", "updated_at"]
    list_filter = ["subscription_status"]
    search_fields = ["organization__slug", "organization__name", "=stripe_customer_id"]
    list_select_related = ["organization"]
    fields = ["organization", "stripe_customer_id", "stripe_subscription_id", "subscription_status",
              "current_period_start", "current_period_end", "past_due_since", "monthly_spend_limit_micros",
              "subscription_state", "updated_at"]
    readonly_fields = [f for f in fields if f != "monthly_spend_limit_micros"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="monthly limit (USD)", ordering="monthly_spend_limit_micros")
    def spend_limit(self, obj):
        return "—" if obj.monthly_spend_limit_micros is None else f"${money.exact(obj.monthly_spend_limit_micros)}"


@admin.register(SpendAlert)
class SpendAlertAdmin(ReadOnlyAdmin):
    list_display = ["organization", "api_key", "month", "spent", "limit", "sent_at"]
    list_filter = ["month", "organization"]
    list_select_related = ["organization", "api_key"]

    @admin.display(description="spent when sent (USD)", ordering="spent_micros")
    def spent(self, obj):
        return money.exact(obj.spent_micros)

    @admin.display(description="limit (USD)", ordering="limit_micros")
    def limit(self, obj):
        return money.exact(obj.limit_micros)
