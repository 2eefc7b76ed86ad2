"""TLS and headers in production (issue 12, item 5).

A server process runs as an operator runs it (DJANGO_DEBUG=off, static files collected, behind a proxy that sets
X-Forwarded-Proto): plain-HTTP API calls are refused with 403 `https_required` in OpenAI's envelope, never
redirected, and charge nothing; over HTTPS image URLs are https and /v1 and /images/ carry HSTS and nosniff; pages
carry the Content-Security-Policy. In the suite's own process: the new-key page is not cacheable, and
`check --deploy` fails when the static files were not collected (imagegate.E001/E002) or image URLs would be http
(E003). Chromium checks the pages against the policy in tests/test_browser.py.
"""
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.urls import reverse

from accounts.models import Membership
from billing.models import LedgerEntry
from config import checks
from tests.servers import ROOT, uvicorn_processes

HSTS = "max-age=31536000; includeSubDomains; preload"
PAGE_CSP = {"default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "font-src 'self'",
            "connect-src 'self'", "object-src 'none'", "base-uri 'self'", "frame-ancestors 'none'"}
PRODUCTION = {"DJANGO_DEBUG": "off", "DJANGO_SECRET_KEY": "tls-test-" + "k" * 50,
              "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost", "EMAIL_URL": "consolemail://"}
PROXIED = {"X-Forwarded-Proto": "https"}  # what the TLS-terminating proxy adds


@pytest.fixture(scope="module")
def collected_static():
    """`make serve` collects the static files before it starts uvicorn; so does this."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **PRODUCTION}
    result = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"], cwd=ROOT,
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def production(collected_static, transactional_db, prices):
    with uvicorn_processes(1, **PRODUCTION) as servers:
        yield servers[0][0]


def _sdk(base: str, raw_key: str, **headers) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=raw_key, max_retries=0, timeout=30, default_headers=headers)


def test_plain_http_api_calls_are_refused_not_redirected(production, api_key):
    key, raw = api_key
    for headers in ({}, {"X-Forwarded-Proto": "http"}):
        with pytest.raises(openai.PermissionDeniedError) as info:
            _sdk(production, raw, **headers).images.generate(model="local-preview", prompt="a fox", size="256x256")
        error = info.value
        assert error.status_code == 403 and error.code == "https_required" and error.type == "invalid_request_error"
        assert "https://" in error.message and "rotate" in error.message
        assert error.response.headers["x-request-id"].startswith("req_")
        assert error.response.headers["x-content-type-options"] == "nosniff"
        assert "strict-transport-security" not in error.response.headers  # RFC 6797: never over plain HTTP
    # No redirect to follow, for any method or path of the API; nothing was looked up, run or charged.
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/images/generations"), ("GET", "/images/x.png")):
        response = httpx.request(method, production + path, headers={"Authorization": f"Bearer {raw}"},
                                 follow_redirects=False)
        assert response.status_code == 403 and "location" not in response.headers
        assert response.json()["error"]["code"] == "https_required"
    assert not LedgerEntry.objects.for_organization(key.organization).exists()


def test_over_https_image_urls_are_https_and_the_api_sends_hsts_and_nosniff(production, api_key):
    key, raw = api_key
    raw_response = _sdk(production, raw, **PROXIED).images.with_raw_response.generate(
        model="local-preview", prompt="a lighthouse", size="256x256", response_format="url")
    url = raw_response.parse().data[0].url
    assert url.startswith("https://127.0.0.1:"), url
    models = httpx.get(production + "/v1/models", headers={"Authorization": f"Bearer {raw}", **PROXIED})
    for headers in (raw_response.headers, models.headers):
        assert headers["strict-transport-security"] == HSTS
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    parts = urlsplit(url)  # the proxy's address is in the URL; this process is behind it
    image = httpx.get(f"{production}{parts.path}?{parts.query}" if parts.query else production + parts.path,
                      headers=PROXIED)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert image.headers["strict-transport-security"] == HSTS and image.headers["x-content-type-options"] == "nosniff"
    assert LedgerEntry.objects.for_organization(key.organization).filter(status="succeeded").count() == 1


def test_pages_redirect_to_https_and_carry_the_content_security_policy(production):
    plain = httpx.get(production + "/accounts/login/", follow_redirects=False)
    assert plain.status_code == 301  # pages may redirect: a browser sends no key, and HSTS keeps it on HTTPS after
    assert plain.headers["location"] == production.replace("http://", "https://") + "/accounts/login/"
    for path in ("/accounts/login/", "/accounts/signup/", "/docs/api/"):
        page = httpx.get(production + path, headers=PROXIED, follow_redirects=False)
        assert page.status_code == 200, (path, page.status_code)
        assert set(page.headers["content-security-policy"].split("; ")) == PAGE_CSP
        assert page.headers["strict-transport-security"] == HSTS and page.headers["x-frame-options"] == "DENY"
        assert "<style" not in page.text and " style=" not in page.text and "onsubmit=" not in page.text
        assert "/static/css/app." in page.text  # the hashed name from the manifest


def test_dev_server_api_sends_nosniff_and_no_hsts_over_plain_http(live_url, api_key):
    response = httpx.get(f"{live_url}/v1/models", headers={"Authorization": f"Bearer {api_key[1]}"})
    assert response.status_code == 200  # DJANGO_DEBUG on: API_REQUIRE_HTTPS is off
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" not in response.headers


def test_the_api_can_require_https_in_process(live_url, api_key, settings):
    settings.API_REQUIRE_HTTPS = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 60
    refused = httpx.get(f"{live_url}/v1/models", headers={"Authorization": f"Bearer {api_key[1]}"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "https_required"
    served = httpx.get(f"{live_url}/v1/models", headers={"Authorization": f"Bearer {api_key[1]}", **PROXIED})
    assert served.status_code == 200 and served.headers["strict-transport-security"] == "max-age=60"


def test_the_page_that_shows_a_new_key_is_not_cacheable(client, api_key):
    org = api_key[0].organization
    client.force_login(Membership.objects.for_organization(org).get(role="owner").user)
    listing = client.get(reverse("api-keys"))
    assert listing.status_code == 200 and set(listing.headers["content-security-policy"].split("; ")) == PAGE_CSP
    created = client.post(reverse("api-keys"), {"name": "shown once"})
    assert created.status_code == 200 and b'data-testid="new-key"' in created.content
    directives = {d.strip() for d in created.headers["cache-control"].split(",")}
    assert {"no-store", "private"} <= directives, created.headers["cache-control"]
    rotated = client.post(reverse("api-key-rotate", args=[api_key[0].pk]), {})
    assert rotated.status_code == 200 and "no-store" in rotated.headers["cache-control"]


# --- check --deploy -----------------------------------------------------------------------------------------------

MANIFEST_STORAGE = {"default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
                    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"}}


def test_check_deploy_fails_until_static_files_are_collected(settings, tmp_path):
    settings.STORAGES = MANIFEST_STORAGE
    settings.STATIC_ROOT = tmp_path / "collected"
    extra = tmp_path / "extra"
    extra.mkdir()
    settings.STATICFILES_DIRS = [*settings.STATICFILES_DIRS, extra]
    with pytest.raises(SystemCheckError, match=r"imagegate\.E001"):
        call_command("check", "--deploy")
    call_command("collectstatic", "--noinput", verbosity=0)
    assert checks.static_manifest() == []
    (extra / "added-later.css").write_text("body { color: black; }\n")  # a file the release did not collect
    errors = checks.static_manifest()
    assert [e.id for e in errors] == ["imagegate.E002"] and "added-later.css" in errors[0].msg


def test_check_deploy_fails_as_an_operator_runs_it(tmp_path):
    """The production settings from the environment, `manage.py check --deploy`'s own code path, an empty
    STATIC_ROOT: exit status 1 and the error named."""
    script = ("import os, sys, django\n"
              "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings')\n"
              "django.setup()\n"
              "from django.core.management import execute_from_command_line\n"
              "from django.test.utils import override_settings\n"
              f"with override_settings(STATIC_ROOT={str(tmp_path)!r}):\n"
              "    execute_from_command_line(['manage.py', 'check', '--deploy'])\n")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **PRODUCTION}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "imagegate.E001" in result.stderr, result.stdout + result.stderr
    assert "Static files were not collected" in result.stderr


def test_check_deploy_fails_on_http_image_urls_when_https_is_required(settings):
    settings.API_REQUIRE_HTTPS = True
    settings.PUBLIC_BASE_URL = "http://api.example.com"
    assert [e.id for e in checks.image_urls_use_https()] == ["imagegate.E003"]
    settings.PUBLIC_BASE_URL = "https://api.example.com"
    assert checks.image_urls_use_https() == []
    settings.API_REQUIRE_HTTPS, settings.PUBLIC_BASE_URL = False, "http://localhost:8000"
    assert checks.image_urls_use_https() == []


def test_every_page_template_is_free_of_inline_script_and_style():
    """What the policy refuses: inline <script> (other than JSON data), <style>, style= and on*= attributes."""
    import re

    offenders = []
    for path in sorted(Path(ROOT, "templates").rglob("*.html")):
        text = path.read_text()
        for pattern in (r"<script(?![^>]*\bsrc=)(?![^>]*application/json)", r"<style", r"\sstyle=", r"\son[a-z]+="):
            if re.search(pattern, text):
                offenders.append((path.relative_to(ROOT).as_posix(), pattern))
    assert not offenders, offenders
