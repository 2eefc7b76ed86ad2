"""Settings come from the environment: the embedded default with nothing set, production hardening with DEBUG off."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, django
from django.conf import settings
django.setup()
from celery import current_app
print(json.dumps({
  "debug": settings.DEBUG,
  "db": settings.DATABASES["default"]["ENGINE"],
  "db_name": str(settings.DATABASES["default"]["NAME"]),
  "cache": settings.CACHES["default"]["BACKEND"],
  "eager": settings.CELERY_TASK_ALWAYS_EAGER,
  "broker": settings.CELERY_BROKER_URL,
  "storage": settings.STORAGES["default"]["BACKEND"],
  "storage_options": {k: v for k, v in settings.STORAGES["default"].get("OPTIONS", {}).items()
                      if k in ("bucket_name", "endpoint_url")},
  "secure_cookies": (getattr(settings, "SESSION_COOKIE_SECURE", False)
                     and getattr(settings, "CSRF_COOKIE_SECURE", False)),
  "hsts": getattr(settings, "SECURE_HSTS_SECONDS", 0),
  "hosts": settings.ALLOWED_HOSTS,
  "verification": settings.ACCOUNT_EMAIL_VERIFICATION,
  "email": settings.EMAIL_BACKEND,
}))
"""


def _settings_with(env: dict) -> dict:
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
             "DJANGO_SETTINGS_MODULE": "config.settings"}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_embedded_default_with_no_environment():
    s = _settings_with({})
    assert s["debug"] is True
    assert s["db"] == "django.db.backends.sqlite3" and s["db_name"].endswith("db.sqlite3")
    assert s["cache"].endswith("LocMemCache")
    assert s["eager"] is True
    assert s["storage"] == "django.core.files.storage.FileSystemStorage"
    assert s["email"].endswith("console.EmailBackend")
    assert s["verification"] == "optional"


def test_services_from_environment():
    s = _settings_with({
        "DATABASE_URL": "postgres://u:p@db.internal:5432/imagegate",
        "REDIS_URL": "redis://cache.internal:6379/0",
        "AWS_STORAGE_BUCKET_NAME": "images",
        "AWS_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
    })
    assert s["db"] == "django.db.backends.postgresql" and s["db_name"] == "imagegate"
    assert s["cache"] == "django_redis.cache.RedisCache"
    assert s["eager"] is False and s["broker"] == "redis://cache.internal:6379/0"
    assert s["storage"] == "storages.backends.s3.S3Storage"
    assert s["storage_options"] == {"bucket_name": "images", "endpoint_url": "http://127.0.0.1:9000"}


PRODUCTION = {
    "DJANGO_DEBUG": "off",
    "DJANGO_SECRET_KEY": "x9!production-secret-that-is-long-and-random-enough-for-check-deploy-0123456789",
    "DJANGO_ALLOWED_HOSTS": "api.imagegate.example",
}


def test_production_hardening_when_debug_is_off():
    s = _settings_with(PRODUCTION)
    assert s["debug"] is False
    assert s["secure_cookies"] is True
    assert s["hsts"] >= 31536000
    assert s["hosts"] == ["api.imagegate.example"]
    assert s["verification"] == "mandatory"


def test_check_deploy_is_clean_in_production():
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **PRODUCTION}
    # A release collects the static files first (`make serve`, the Dockerfile); without them check --deploy fails
    # (imagegate.E001, tests/test_tls.py).
    collect = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"], cwd=ROOT,
                             env=env, capture_output=True, text=True)
    assert collect.returncode == 0, collect.stderr
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "DJANGO_DEBUG": "off"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "DJANGO_SECRET_KEY" in result.stderr


REGISTRY_PROBE = """
import json, django
django.setup()
from generation.providers import build_providers
providers = build_providers()
print(json.dumps({name: getattr(p, "base_url", None) for name, p in providers.items()}))
"""


def _registry_with(env: dict) -> dict:
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
             "DJANGO_SETTINGS_MODULE": "config.settings"}
    out = subprocess.run([sys.executable, "-c", REGISTRY_PROBE], cwd=ROOT, env={**clean, **env}, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_gemini_recraft_and_ideogram_are_on_when_their_keys_are_set():
    """The names in issue 13 are contracts: <PROVIDER>_API_KEY switches a provider on, <PROVIDER>_BASE_URL moves it."""
    assert set(_registry_with({})) == {"local"}
    defaults = _registry_with({"GEMINI_API_KEY": "g", "RECRAFT_API_KEY": "r", "IDEOGRAM_API_KEY": "i"})
    assert defaults == {"local": None, "gemini": "https://generativelanguage.googleapis.com",
                        "recraft": "https://external.api.recraft.ai", "ideogram": "https://api.ideogram.ai"}
    moved = _registry_with({"GEMINI_API_KEY": "g", "GEMINI_BASE_URL": "http://127.0.0.1:9/g/",
                            "RECRAFT_API_KEY": "r", "RECRAFT_BASE_URL": "http://127.0.0.1:9/r",
                            "IDEOGRAM_API_KEY": "i", "IDEOGRAM_BASE_URL": "http://127.0.0.1:9/i"})
    assert (moved["gemini"], moved["recraft"], moved["ideogram"]) == (
        "http://127.0.0.1:9/g", "http://127.0.0.1:9/r", "http://127.0.0.1:9/i")
