"""The house rules that are not import directions (those are import-linter's, `make lint`): read from the source.

* every error code the code raises is in the registry (generation/errors.py), and docs/errors.md is generated from it;
* `all_tenants_unsafe` (the cross-tenant manager) appears only in the modules accounts/tenancy.py lists;
* ledger rows (and their outbox rows) are written only in billing/;
* provider adapters touch no database (import-linter cannot forbid a part of an external package).
"""
import ast
from pathlib import Path

import pytest

from accounts.tenancy import ALL_TENANTS_ALLOWED
from generation import errors

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "billing", "generation", "config")


def _sources(*roots: str):
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            if "migrations" in path.parts or "__pycache__" in path.parts:
                continue
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), filename=str(path))


# --- Error codes ----------------------------------------------------------------------------------------------------

# What answers on /v1 (and the playground, which speaks the API's errors). Provider adapters are left out: the codes
# there are the upstreams' own, which the pipeline maps to ours.
API_SOURCES = ("generation/api", "generation/pipeline", "generation/pages", "generation/errors.py", "config/http",
               "accounts/authentication.py")


def _raised_codes() -> dict[str, set[str]]:
    """code → the modules that raise it: `code="..."` keywords, `code = "..."` class attributes, `"code": "..."`
    dict keys."""
    found: dict[str, set[str]] = {}
    for name, tree in _sources_in(API_SOURCES):
        for node in ast.walk(tree):
            literal = None
            if isinstance(node, ast.keyword) and node.arg == "code":
                literal = node.value
            elif isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if (isinstance(stmt, ast.Assign) and any(getattr(t, "id", None) == "code" for t in stmt.targets)):
                        found.setdefault(getattr(stmt.value, "value", None), set()).add(name)
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and key.value == "code":
                        literal = value
            if isinstance(literal, ast.Constant):
                found.setdefault(literal.value, set()).add(name)
    found.pop(None, None)
    return found


def _sources_in(paths):
    for path in paths:
        if path.endswith(".py"):
            yield path, ast.parse((ROOT / path).read_text())
        else:
            yield from _sources(path)


def test_every_raised_error_code_is_in_the_registry():
    raised = _raised_codes()
    assert {"model_not_allowed", "provider_unavailable", "invalid_request_body", "missing_scope"} <= raised.keys()
    missing = {code: sorted(where) for code, where in raised.items() if code not in errors.CODES}
    assert not missing, f"error codes raised but not in generation/errors.py REGISTRY: {missing}"


def test_the_registry_lists_each_code_once_and_only_codes_the_api_can_answer():
    codes = [row.code for row in errors.REGISTRY if row.code is not None]
    assert len(codes) == len(set(codes))
    raised = _raised_codes()
    unused = sorted(set(codes) - raised.keys())
    assert not unused, f"registered codes nothing raises (remove them, or raise them): {unused}"
    for row in errors.REGISTRY:
        assert 400 <= row.status < 600 and row.type and row.when.endswith((".", ")"))


def test_an_unregistered_code_is_refused():
    assert errors.STRICT  # tests/conftest.py
    with pytest.raises(errors.UnregisteredErrorCode):
        errors.APIError("x", code="no_such_code")
    with pytest.raises(errors.UnregisteredErrorCode):
        errors.envelope("x", type="invalid_request_error", code="no_such_code")


def test_a_registered_code_brings_its_status_and_type():
    exc = errors.APIError("Key lacks a scope.", code="missing_scope")
    assert (exc.status, exc.type, exc.body()["error"]["code"]) == (401, "invalid_request_error", "missing_scope")
    exc = errors.APIError("Spent.", code="insufficient_quota")
    assert (exc.status, exc.type) == (429, "insufficient_quota")


def test_docs_errors_md_is_generated_from_the_registry():
    from generation.management.commands.error_codes import markdown

    assert (ROOT / "docs" / "errors.md").read_text() == markdown(), (
        "docs/errors.md differs from the registry: run `python manage.py error_codes > docs/errors.md`")


def test_the_openapi_table_is_the_registry(client):
    schema = client.get("/v1/openapi.json").json()
    table = schema["components"]["schemas"]["Error"]["x-error-codes"]
    assert [(r["status"], r["type"], r["code"]) for r in table] == [
        (row.status, row.type, row.code) for row in errors.REGISTRY]


# --- Tenancy --------------------------------------------------------------------------------------------------------

def test_all_tenants_unsafe_is_used_only_where_listed():
    users: dict[str, int] = {}
    for name, tree in _sources(*APPS):
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "all_tenants_unsafe":
                users[name] = users.get(name, 0) + 1
    unlisted = sorted(set(users) - ALL_TENANTS_ALLOWED.keys())
    assert not unlisted, (f"{unlisted} use all_tenants_unsafe: scope the query with .objects.for_organization(org), "
                          "or list the module (and why) in accounts/tenancy.py ALL_TENANTS_ALLOWED")
    stale = sorted(ALL_TENANTS_ALLOWED.keys() - set(users))
    assert not stale, f"accounts/tenancy.py lists modules that no longer cross tenants: {stale}"


def test_every_organization_owned_model_has_the_tenant_manager():
    from django.apps import apps

    from accounts.models import Organization
    from accounts.tenancy import TenantManager

    owned = []
    for model in apps.get_models():
        if model._meta.app_label not in ("accounts", "billing", "generation"):
            continue
        fields = {f.name: f for f in model._meta.concrete_fields}
        org = fields.get("organization")
        via_key = fields.get("api_key")
        if (org is not None and org.related_model is Organization) or (
                via_key is not None and model._meta.pk is via_key):
            owned.append(model)
            assert isinstance(model._meta.managers_map.get("objects"), TenantManager), (
                f"{model.__name__}.objects is not a TenantManager")
            assert "all_tenants_unsafe" in model._meta.managers_map, model.__name__
    assert len(owned) >= 15


# --- Money ----------------------------------------------------------------------------------------------------------

LEDGER_MODELS = {"LedgerEntry", "UsageEvent"}
WRITES = {"create", "bulk_create", "update", "update_or_create", "get_or_create", "delete", "save", "insert"}


def test_ledger_rows_are_written_only_in_billing():
    offenders = []
    for name, tree in _sources("accounts", "generation", "config"):
        for node in ast.walk(tree):
            # LedgerEntry(...) / UsageEvent(...): a row built outside billing
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in LEDGER_MODELS:
                offenders.append(f"{name}:{node.lineno} builds {node.func.id}")
            # LedgerEntry.<manager>.<write>(...)
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITES
                    and isinstance(node.func.value, ast.Attribute)
                    and isinstance(node.func.value.value, ast.Name) and node.func.value.value.id in LEDGER_MODELS):
                offenders.append(f"{name}:{node.lineno} {node.func.value.value.id}...{node.func.attr}()")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "billing_ledgerentry" in node.value:
                offenders.append(f"{name}:{node.lineno} names the ledger table in SQL")
    assert not offenders, f"ledger rows are written only in billing/ (billing/recording.py): {offenders}"


# --- Providers ------------------------------------------------------------------------------------------------------

def test_provider_adapters_touch_no_database():
    for name, tree in _sources("generation/providers"):
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            for module in modules:
                assert not module.startswith(("django.db", "django.contrib", "psycopg")), f"{name} imports {module}"


# --- Page tenancy ---------------------------------------------------------------------------------------------------


def _dashboard_views():
    from django.urls import URLPattern, URLResolver, get_resolver

    def walk(patterns, prefix):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                yield from walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                yield prefix + str(entry.pattern), entry.callback

    return [(route, view) for route, view in walk(get_resolver().url_patterns, "") if route.startswith("dashboard/")]


def test_every_customer_page_goes_through_the_one_tenancy_door():
    """Every /dashboard/ view is wrapped by accounts.access.organization_page (which resolves the organization and
    checks a role permission); a page that resolves its organization some other way fails here."""
    # Accepting an invitation is the one page for someone who is not yet a member (it checks the signed token).
    outside = {"dashboard/invite/<str:token>/"}
    views = _dashboard_views()
    assert len(views) >= 10
    doorless = [route for route, view in views if not getattr(view, "organization_permission", None)]
    assert sorted(set(doorless) - outside) == []
