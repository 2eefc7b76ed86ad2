"""Browser walks through the real product: Playwright drives Debian's Chromium against the live ASGI server.

Walk 1 (a customer): sign up, create an API key, generate through the API with the OpenAI SDK, find the requests in
the log, a detail page and the chart, export the CSV, revoke the key. Walk 2 (staff): sign in with password + TOTP
and go through the admin's audit pages. Walk 3 (issue 12): every page a signed-in staff member who also belongs to an
organization can reach by following links, under the Content-Security-Policy. Every walk fails on a JavaScript
error or a console error (a policy violation is one). Screenshots of the main pages go to test-artifacts/screenshots/.

Chromium comes from Debian (`make browser`); Playwright cannot download its own browsers on this machine. Without
/usr/bin/chromium these tests fail (they never skip).
"""
import csv
import io
import os
import re
import shutil
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from accounts import services as account_services
from billing.models import Discrepancy

from .test_admin_audit import PASSWORD, _current_code, _make_staff, _record

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
TIMEOUT_MS = 20_000

pytestmark = pytest.mark.timeout(180)


def _shot(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _goto(page, url):
    response = page.goto(url)
    assert response is not None and response.status == 200, f"{url}: HTTP {response and response.status}"
    return response


def _assert_styled(page):
    """The stylesheet arrived (WhiteNoise) and applies: the top bar is laid out as a flex row."""
    sheets = page.evaluate("Array.from(document.styleSheets).map(s => { try { return s.cssRules.length } "
                           "catch (e) { return -1 } })")
    assert sheets and all(n > 0 for n in sheets), f"stylesheets not loaded: {sheets}"
    assert page.evaluate("getComputedStyle(document.querySelector('.topbar')).display") == "flex"


@pytest.fixture
def page(live_url):
    """A fresh Chromium page (depends on live_url so it closes before the database is flushed)."""
    from playwright.sync_api import sync_playwright

    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium not found at {CHROMIUM} (found on PATH: {shutil.which('chromium')}). "
                    "Install Debian's package with `make browser` (apt-get install -y chromium); "
                    "`playwright install` cannot download browsers on this machine.", pytrace=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=live_url, viewport={"width": 1280, "height": 900},
                                      accept_downloads=True)
        context.set_default_timeout(TIMEOUT_MS)
        pg = context.new_page()
        errors = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        # Console errors, among them every Content-Security-Policy violation ("Refused to apply inline style ...").
        # (The status of the page itself is the test's to assert: a 404 page's own "Failed to load resource" is not
        # an error of the page.)
        pg.on("console", lambda msg: errors.append(f"{pg.url}: {msg.text} ({msg.location.get('url')})")
              if msg.type == "error" and msg.location.get("url") != pg.url else None)
        try:
            yield pg
        finally:
            context.close()
            browser.close()
        assert not errors, f"JavaScript or console errors on the pages: {errors}"


def _sdk(live_url, raw_key):
    from openai import OpenAI

    return OpenAI(base_url=f"{live_url}/v1", api_key=raw_key, max_retries=0, timeout=30)


def test_customer_walk_signup_key_generate_log_chart_export_revoke(page, live_url):
    import openai

    # --- sign up --------------------------------------------------------------------------------------------------
    _goto(page, "/accounts/signup/")
    _assert_styled(page)
    page.fill('input[name="email"]', "walker@example.com")
    page.fill('input[name="password1"]', "browser horse battery staple")
    page.fill('input[name="password2"]', "browser horse battery staple")
    page.fill('input[name="organization_name"]', "Browser Co")
    _shot(page, "01-signup")
    page.locator('form:has(input[name="password1"]) [type="submit"]').click()
    page.wait_for_url(re.compile(r"/dashboard/$"))
    assert page.locator("h1").inner_text() == "Browser Co"
    _assert_styled(page)

    # --- create a key ---------------------------------------------------------------------------------------------
    page.click('header nav a:has-text("API keys")')
    page.wait_for_url(re.compile(r"/keys/$"))
    page.fill('input[name="name"]', "browser")
    page.click('button:has-text("Create key")')
    raw_key = page.locator('[data-testid="new-key"]').inner_text().strip()
    assert raw_key.startswith("ig_"), raw_key
    _shot(page, "03-keys-new-key")

    # --- generate through the API (the official SDK) --------------------------------------------------------------
    client = _sdk(live_url, raw_key)
    request_ids = []
    for prompt in ("A lighthouse in a storm", "A red balloon over a lake"):
        raw = client.images.with_raw_response.generate(model="local-preview", prompt=prompt, size="256x256")
        result = raw.parse()
        assert len(result.data) == 1 and result.data[0].url
        request_ids.append(raw.headers["x-request-id"])
    assert len(set(request_ids)) == 2

    # --- the request log and a detail page ------------------------------------------------------------------------
    page.click('header nav a:has-text("Requests")')
    page.wait_for_url(re.compile(r"/dashboard/requests/$"))
    for request_id in request_ids:
        row = page.locator(f'#request-log tr[data-request-id="{request_id}"]')
        assert row.count() == 1, f"{request_id} not in the request log"
        assert "Succeeded" in row.inner_text() and "browser" in row.inner_text()
    _shot(page, "04-request-log")
    page.click(f'#request-log tr[data-request-id="{request_ids[0]}"] a')
    page.wait_for_url(re.compile(rf"/dashboard/requests/{re.escape(request_ids[0])}/$"))
    assert request_ids[0] in page.locator("h1").inner_text()
    assert "local-preview" in page.content() and "256x256" in page.content()
    _shot(page, "05-request-detail")

    # --- the overview: chart and totals ---------------------------------------------------------------------------
    page.click('header nav a:has-text("Overview")')
    page.wait_for_url(re.compile(r"/dashboard/$"))
    page.wait_for_function("window.imagegateCharts && window.imagegateCharts.length === 2")
    drawn = page.evaluate("window.imagegateCharts.map(c => c.data.datasets.map(d => "
                          "d.data.reduce((a, b) => a + b, 0)))")
    assert sum(drawn[1]) == 2 and sum(drawn[0]) > 0, drawn  # images, spend (micro-USD), stacked by model
    assert page.locator("#range-requests").inner_text() == "2"
    assert page.locator("#range-images").inner_text() == "2"
    assert page.locator("#range-spend").inner_text() not in ("$0.0000", "$0", "")
    stats = {page.locator(".stats .stat .label").nth(i).inner_text(): page.locator(".stats .stat .value").nth(i)
             .inner_text() for i in range(4)}
    assert stats["Requests this month"] == "2" and stats["Images this month"] == "2", stats
    assert stats["Spend this month"] != "$0.0000", stats
    _shot(page, "02-dashboard-overview")

    # --- export CSV -----------------------------------------------------------------------------------------------
    _goto(page, "/dashboard/requests/")
    with page.expect_download() as download_info:
        page.click('a:has-text("Export CSV")')
    download = download_info.value
    name = download.suggested_filename
    assert name.startswith("imagegate-requests-") and name.endswith(".csv")
    lines = list(csv.reader(io.StringIO(Path(download.path()).read_text())))
    header, body = lines[0], lines[1:]
    assert header[:2] == ["created_at", "request_id"] and "cost_usd" in header
    assert len(body) == 2
    assert sorted(r[header.index("request_id")] for r in body) == sorted(request_ids)

    # --- billing and team pages -----------------------------------------------------------------------------------
    page.click('header nav a:has-text("Billing")')
    page.wait_for_url(re.compile(r"/billing/$"))
    assert page.locator("h1").inner_text() == "Billing"
    _shot(page, "06-billing")
    page.click('header nav a:has-text("Team")')
    page.wait_for_url(re.compile(r"/team/$"))
    assert page.locator("h1").inner_text() == "Team" and "walker@example.com" in page.content()
    _shot(page, "07-team")

    # --- revoke the key -------------------------------------------------------------------------------------------
    page.click('header nav a:has-text("API keys")')
    page.wait_for_url(re.compile(r"/keys/$"))
    dialogs = []

    def accept(dialog):
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    row = page.locator("table.table tbody tr", has_text="browser")
    with page.expect_navigation():
        row.locator('button:has-text("Revoke")').click()
    assert dialogs and "Revoke browser?" in dialogs[0]
    assert "Revoked" in page.locator("table.table tbody tr", has_text="browser").inner_text()
    with pytest.raises(openai.AuthenticationError):
        client.images.generate(model="local-preview", prompt="after revocation", size="256x256")


@pytest.fixture
def audit_data(organization, prices):
    """A superuser with TOTP, ledger rows in one organization and an open discrepancy (made before the browser)."""
    staff, secret = _make_staff("auditor@imagegate.test")
    key, _ = account_services.create_api_key(organization=organization, name="audited key")
    rows = [_record(organization, key, f"req_walk_{i}", n=i) for i in (1, 2, 3)]
    rows.append(_record(organization, key, "req_walk_failed", status="failed"))
    now = timezone.now()
    Discrepancy.all_tenants_unsafe.create(organization=organization, window_start=now - timedelta(hours=1),
                                          window_end=now,
                               ledger_micros=5000, reported_micros=5000, stripe_micros=4000)
    return staff, secret, rows


def test_staff_audit_walk_through_the_admin(audit_data, page):
    staff, secret, rows = audit_data

    # --- sign in: password, then the TOTP code --------------------------------------------------------------------
    page.goto("/admin/")
    page.wait_for_url(re.compile(r"/accounts/login/"))
    page.fill('input[name="login"]', staff.email)
    page.fill('input[name="password"]', PASSWORD)
    page.locator('form:has(input[name="password"]) [type="submit"]').click()
    page.wait_for_url(re.compile(r"/accounts/2fa/authenticate/"))
    page.fill('input[name="code"]', _current_code(secret))
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_url(re.compile(r"/admin/$"))
    assert "Ledger entries" in page.content()

    def visit(url, title, *texts):
        _goto(page, url)
        heading = page.locator("#content h1").first.inner_text()
        assert title.lower() in heading.lower(), f"{url}: heading {heading!r}, expected {title!r}"
        content = page.content()
        for text in texts:
            assert text in content, f"{url}: {text!r} not on the page"
        return content

    # --- the ledger: list, filter, search, totals -----------------------------------------------------------------
    visit("/admin/billing/ledgerentry/", "ledger entr", "Totals for the filtered set", "Export CSV")
    _shot(page, "08-admin-ledger")
    content = visit("/admin/billing/ledgerentry/?status__exact=failed", "ledger entr", "req_walk_failed")
    assert "req_walk_2" not in content
    visit("/admin/billing/ledgerentry/?q=req_walk_2", "ledger entr", "req_walk_2", "$0.002000")
    assert page.locator("#result_list tbody tr").count() == 1
    totals = page.get_by_text("Totals for the filtered set").locator("..").inner_text()
    assert "0.002000" in totals, totals
    visit(f"/admin/billing/ledgerentry/?organization__id__exact={rows[0].organization_id}", "ledger entr",
          "$0.006000")

    # --- the other billing pages and the audit log ----------------------------------------------------------------
    visit("/admin/billing/meterreport/", "meter report")
    visit("/admin/billing/discrepancy/", "discrepanc", "Acme")
    visit("/admin/billing/stripeevent/", "stripe event")
    visit("/admin/billing/price/", "price", "local-preview")
    visit("/admin/admin/logentry/", "log entr")


# --- Walk 3: every page under the Content-Security-Policy (issue 12) -----------------------------------------------

# Not pages: logging out, the API and images, CSV downloads, the admin's "view on site" redirects.
SKIP_LINKS = ("/accounts/logout/", "/admin/logout/", "/v1/", "/images/", "/admin/r/")
MAX_PAGES = 120


def _page_kind(path: str) -> str:
    """One visit per kind of page: object ids and request ids vary, the template does not."""
    return re.sub(r"/req_[A-Za-z0-9_]+/", "/<request>/", re.sub(r"/\d+/", "/<id>/", path))


@pytest.fixture
def staff_member(audit_data):
    """The audit walk's staff user, also the owner of the organization with the ledger rows."""
    from accounts.models import Membership

    staff, secret, rows = audit_data
    Membership.all_tenants_unsafe.create(organization=rows[0].organization, user=staff, role=Membership.Role.OWNER)
    return staff, secret


def test_every_page_passes_the_content_security_policy(staff_member, page, live_url):
    staff, secret = staff_member
    csp_headers = set()
    page.on("response", lambda r: csp_headers.add(r.headers.get("content-security-policy"))
            if r.request.resource_type == "document" else None)

    for anonymous in ("/accounts/signup/", "/accounts/password/reset/", "/docs/api/"):
        _goto(page, anonymous)
    page.goto("/admin/")
    page.wait_for_url(re.compile(r"/accounts/login/"))
    page.fill('input[name="login"]', staff.email)
    page.fill('input[name="password"]', PASSWORD)
    page.locator('form:has(input[name="password"]) [type="submit"]').click()
    page.wait_for_url(re.compile(r"/accounts/2fa/authenticate/"))
    page.fill('input[name="code"]', _current_code(secret))
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_url(re.compile(r"/admin/$"))

    # The playground's result page (its images are data: URIs or /images/ URLs) and a page showing a new key.
    _goto(page, "/dashboard/playground/")
    page.fill('[name="prompt"]', "a lighthouse under the policy")
    page.click('[data-testid="generate"]')
    page.wait_for_selector(".gallery img")
    assert page.evaluate("document.querySelector('.gallery img').naturalWidth") > 0
    _goto(page, "/dashboard/keys/")
    page.fill('input[name="name"]', "under the policy")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/dashboard/keys/")) as info:
        page.click('button:has-text("Create key")')
    assert "no-store" in info.value.headers["cache-control"]

    seen, queue, visited = set(), ["/dashboard/", "/admin/", "/accounts/email/", "/accounts/2fa/",
                                   "/accounts/password/change/"], []
    while queue and len(visited) < MAX_PAGES:
        path = queue.pop(0)
        if _page_kind(path) in seen:
            continue
        seen.add(_page_kind(path))
        response = page.goto(path)
        assert response is not None and response.status == 200, f"{path}: HTTP {response and response.status}"
        visited.append(path)
        for href in page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)"):
            parts = urlsplit(href)
            if (f"{parts.scheme}://{parts.netloc}" == live_url and not parts.path.startswith(SKIP_LINKS)
                    and not parts.path.endswith((".csv", "/export/"))):
                queue.append(parts.path)
    missing = page.goto("/dashboard/no-such-page/")
    assert missing is not None and missing.status == 404
    kinds = {_page_kind(p) for p in visited}
    assert len(kinds) >= 60, sorted(kinds)  # 85 kinds of page when this was written: the admin's are most of them
    for expected in ("/dashboard/", "/dashboard/requests/<request>/", "/dashboard/team/", "/dashboard/billing/",
                     "/admin/billing/ledgerentry/", "/admin/billing/ledgerentry/<id>/change/",
                     "/accounts/email/", "/accounts/2fa/"):
        assert expected in kinds, f"the walk never reached {expected}: {sorted(kinds)}"
    assert len(csp_headers) == 1 and "script-src 'self'" in csp_headers.pop()
