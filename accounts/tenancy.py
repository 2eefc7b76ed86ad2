"""Tenant scoping, in one place.

Every organization-owned model declares two managers:

    all_tenants_unsafe = models.Manager()  # first, so Django's internals (admin, relations) use it
    objects = TenantManager()              # the only way application code reads one tenant's data

`Model.objects.for_organization(org)` is the scoped entry point. Anything else on `objects` (`.all()`, `.filter()`,
`.get()`) raises `UnscopedQueryError`, so a query that forgets the tenant fails loudly in tests instead of leaking.

`all_tenants_unsafe` crosses tenants. Its name is the warning; the modules that may use it (jobs that work across
every organization, staff's admin, lookups by a globally unique secret such as an API key's hash or a Stripe
customer id) are listed in ALL_TENANTS_ALLOWED, and tests/test_architecture.py fails on any other use.

Models whose organization is reached through a relation set `tenant_field` on their manager
(`TenantManager(tenant_field="api_key__organization")`).
"""
from django.db import models

# Where `all_tenants_unsafe` may be used (module path → why), outside tests/, bench/ and migrations.
ALL_TENANTS_ALLOWED = {
    "accounts/admin.py": "staff's admin lists every organization's rows",
    "accounts/selectors.py": "a key is found by its prefix, a user's memberships by user, an invitation by token",
    "billing/admin.py": "staff's admin lists every organization's rows",
    "billing/alerts.py": "a Celery task names the key lineage it was given",
    "billing/rollups.py": "the rollup job sums every organization's new ledger rows",
    "billing/sealing.py": "the sealing job chains every organization's new ledger rows",
    "billing/spend.py": "spend limits are looked up by the authenticated key's lineage id",
    "billing/stripe/reconciliation.py": "reconciliation compares every customer's ledger with Stripe",
    "billing/stripe/reporting.py": "the reporter sends every organization's unreported usage to Stripe",
    "billing/stripe/webhooks.py": "a Stripe event names a customer id, not an organization",
    "billing/usage/reader.py": "the staff ledger admin's totals and date drill-down span every organization",
    "generation/prompts.py": "the purge job blanks every organization's prompts past their retention",
    "generation/pipeline/jobs.py": "a worker claims a job by id; expiry deletes all old jobs",
    "generation/pipeline/webhooks.py": "delivery workers and the retry sweep find deliveries by id across tenants",
    "generation/pipeline/idempotency.py": "a replay is found by organization and key hash in one indexed lookup",
    "generation/pipeline/storage.py": "a signed image URL's token names the image, not the organization",
}


class UnscopedQueryError(RuntimeError):
    """A tenant-owned model was queried without naming the organization."""


class TenantManager(models.Manager):
    """`objects` of an organization-owned model: only `for_organization(org)` reads (or writes) through it."""

    def __init__(self, tenant_field: str = "organization"):
        super().__init__()
        self.tenant_field = tenant_field

    def get_queryset(self):
        raise UnscopedQueryError(
            f"{self.model.__name__}.objects must be scoped: use .for_organization(org), "
            f"or {self.model.__name__}.all_tenants_unsafe where crossing tenants is intended "
            "(and listed in accounts/tenancy.py)."
        )

    def for_organization(self, organization):
        """The rows of one organization (an Organization or its id). UnscopedQueryError for None."""
        if organization is None:
            raise UnscopedQueryError(f"{self.model.__name__}: for_organization() needs an organization, got None")
        organization_id = getattr(organization, "pk", organization)
        return super().get_queryset().filter(**{f"{self.tenant_field}_id": organization_id})
