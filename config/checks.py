"""Deployment checks (`manage.py check --deploy`) for what Django's own do not see. Registered by
generation/apps.py; they read settings and files only.

* imagegate.E001: the static files' manifest is missing. With DJANGO_DEBUG off the stylesheet and every other static
  file are served by their hashed names from STATIC_ROOT/staticfiles.json (WhiteNoise's
  CompressedManifestStaticFilesStorage); without it every page that names a static file answers 500 ("Missing
  staticfiles manifest entry"). `make serve` and the Dockerfile run collectstatic; a host started another way must too.
* imagegate.E002: the manifest is older than the static files: a file the finders see is not in it (collected before
  it was added), and a page naming it answers 500 the same way.
* imagegate.E003: the API requires HTTPS but PUBLIC_BASE_URL, the base of the image URLs handed to clients, is not an
  https:// URL: every image URL would be refused by this same server.
"""
import json

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, Tags, register

MAX_NAMED = 5  # how many missing files an error names


@register(Tags.staticfiles, deploy=True)
def static_manifest(app_configs=None, **kwargs) -> list[Error]:
    from django.contrib.staticfiles import finders
    from django.contrib.staticfiles.storage import ManifestFilesMixin
    from django.core.files.storage import storages

    storage = storages["staticfiles"]
    if not isinstance(storage, ManifestFilesMixin):  # DEBUG on: files are served as they are, no manifest
        return []
    if not storage.manifest_storage.exists(storage.manifest_name):
        return [Error(
            f"Static files were not collected: {storage.manifest_storage.path(storage.manifest_name)} is missing, so "
            "every page that names a static file answers 500 with DJANGO_DEBUG off.",
            hint="Run `python manage.py collectstatic --noinput` in the release (make serve and the Dockerfile do).",
            id="imagegate.E001")]
    try:
        collected = set(json.loads(storage.read_manifest() or "{}").get("paths", {}))
    except ValueError:
        collected = set()
    ignore = apps.get_app_config("staticfiles").ignore_patterns
    found = {path for finder in finders.get_finders() for path, _ in finder.list(ignore)}
    missing = sorted(found - collected)
    if missing:
        named = ", ".join(missing[:MAX_NAMED]) + (f" and {len(missing) - MAX_NAMED} more" if len(missing) > MAX_NAMED
                                                   else "")
        return [Error(
            f"The static files' manifest is out of date: {len(missing)} file(s) are not in it ({named}); pages "
            "naming them answer 500 with DJANGO_DEBUG off.",
            hint="Run `python manage.py collectstatic --noinput` again in this release.", id="imagegate.E002")]
    return []


@register(Tags.security, deploy=True)
def image_urls_use_https(app_configs=None, **kwargs) -> list[Error]:
    base = getattr(settings, "PUBLIC_BASE_URL", "")
    if getattr(settings, "API_REQUIRE_HTTPS", False) and base and not base.lower().startswith("https://"):
        return [Error(
            f"PUBLIC_BASE_URL is {base!r}: image URLs handed to clients would be plain HTTP, which this server "
            "refuses (API_REQUIRE_HTTPS is on).",
            hint="Set PUBLIC_BASE_URL to the https:// address clients use, or leave it empty to take the request's.",
            id="imagegate.E003")]
    return []
