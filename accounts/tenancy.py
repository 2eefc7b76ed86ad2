"""Tenant scoping, in one place.

Every tenant-owned model declares two managers:

    unscoped = models.Manager()      # first, so Django's internals (admin, relations) use it; the name says so
    objects = TenantManager()        # the only way application code reads tenant data

`Model.objects.for_organization(org)` is the scoped entry point. Anything else on `objects` (`.all()`, `.filter()`,
`.get()`) raises `UnscopedQueryError`, so a query that forgets the tenant fails loudly in tests instead of leaking.
"""
from django.db import models


class UnscopedQueryError(RuntimeError):
    """A tenant-owned model was queried without naming the organization."""


class TenantManager(models.Manager):
    tenant_field = "organization"

    def get_queryset(self):
        raise UnscopedQueryError(
            f"{self.model.__name__}.objects must be scoped: use .for_organization(org), "
            f"or {self.model.__name__}.unscoped where crossing tenants is intended."
        )

    def for_organization(self, organization):
        if organization is None:
            raise UnscopedQueryError(f"{self.model.__name__}: for_organization() needs an organization, got None")
        organization_id = getattr(organization, "pk", organization)
        return super().get_queryset().filter(**{f"{self.tenant_field}_id": organization_id})
