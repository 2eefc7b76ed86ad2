"""Every customer page at a phone (390 px), a tablet (768 px) and a laptop (1366 px) in Debian's Chromium (issue 15):
no horizontal page overflow, no console errors, no inline script (a Content-Security-Policy without 'unsafe-inline'
holds), and a full-page screenshot at 390 and 1366 px under test-artifacts/pages/ (gitignored) for a person to look
at. Also: the collapsible menu, the copy button of a new key, the charts' hover values and their empty state.

Without /usr/bin/chromium these tests fail (they never skip), as tests/test_browser.py explains."""
import re
from pathlib import Path

import pytest

from accounts import services as account_services

from .test_browser import CHROMIUM_ARGS, page  # noqa: F401  (the fixture)

SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "pages"
PASSWORD = "correct horse battery"
WIDTHS = (390, 768, 1366)
SHOT_WIDTHS = (390, 1366)

pytestmark = pytest.mark.timeout(600)


def _sdk(live_url, raw_key):
    from openai import OpenAI

    return OpenAI(base_url=f"{live_url}/v1", api_key=raw_key, max_retries=0, timeout=30)


@pytest.fixture
def customer(live_url, user, organization, api_key):
    """Acme with traffic: two images made through the official SDK (two models' worth of keys), one refused request."""
    import openai

    second, second_raw = account_services.create_api_key(organization=organization, name="batch jobs",
                                                          allowed_models=["local-preview"])
    ok = _sdk(live_url, api_key[1]).images.with_raw_response.generate(
        model="local-preview", prompt="A red fox in a snowy forest at dawn, blue sky", size="256x256", n=2)
    _sdk(live_url, second_raw).images.generate(model="local-preview", prompt="A yellow kite", size="256x256")
    with pytest.raises(openai.BadRequestError) as refused:
        _sdk(live_url, api_key[1]).images.generate(model="local-preview", prompt="A green field", size="7x7")
    return {"ok": ok.headers["x-request-id"], "failed": refused.value.response.headers["x-request-id"]}


def _sign_in(tab, email="owner@example.com"):
    tab.goto("/accounts/login/")
    tab.fill('input[name="login"]', email)
    tab.fill('input[name="password"]', PASSWORD)
    tab.locator('form:has(input[name="password"]) [type="submit"]').click()
    tab.wait_for_url(re.compile(r"/dashboard/$"))


# What django-csp will send (another change adds it): no inline script or style, nothing from elsewhere. Every page
# here is served with it, so a violation is a console error and fails the test.
STRICT_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
              "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'")


def _strict_csp(tab) -> None:
    """Serve every page to `tab` with STRICT_CSP, as if the server sent it."""
    def add_header(route):
        if route.request.resource_type != "document":
            route.continue_()
            return
        response = route.fetch(max_redirects=0)
        route.fulfill(response=response, headers={**response.headers, "content-security-policy": STRICT_CSP})

    tab.route("**/*", add_header)


def _console_errors(tab) -> list:
    errors = []
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


def _widest(tab) -> list:
    """The innermost elements that stick out of the window, to say what overflows."""
    return tab.evaluate("""Array.from(document.querySelectorAll('body *'))
        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
        .filter(e => !Array.from(e.children).some(c => c.getBoundingClientRect().right > window.innerWidth + 1))
        .slice(0, 5).map(e => e.tagName + '.' + e.className + ': ' + (e.textContent || '').slice(0, 60))""")


def _screenshot(tab, path: Path, limit: int = 8_000) -> None:
    """A full-tab screenshot; a tab taller than `limit` px (the API reference on a phone) is shot in up to four
    slices of `limit` px, a tall window scrolled down (Chromium cannot capture one image that tall)."""
    height = tab.evaluate("document.documentElement.scrollHeight")
    viewport = tab.viewport_size
    if height <= limit:
        tab.screenshot(path=str(path), full_page=True)
        return
    tab.set_viewport_size({"width": viewport["width"], "height": limit})
    for i, top in enumerate(range(0, min(height, 4 * limit), limit)):
        tab.evaluate(f"window.scrollTo(0, {top})")
        tab.screenshot(path=str(path.with_name(f"{path.stem}.{i + 1}{path.suffix}")))
    tab.set_viewport_size(viewport)


def _check(tab, url: str, name: str, errors: list, *, status: int = 200) -> None:
    for width in WIDTHS:
        tab.set_viewport_size({"width": width, "height": 900})
        response = tab.goto(url)
        assert response is not None and response.status == status, f"{url}: HTTP {response and response.status}"
        assert response.headers.get("content-security-policy") == STRICT_CSP
        tab.wait_for_load_state("load")
        tab.wait_for_timeout(50)  # charts draw on DOMContentLoaded + a frame
        scroll, inner = tab.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"{url} at {width} px: the page is {scroll} px wide: {_widest(tab)}"
        inline = tab.evaluate("""Array.from(document.querySelectorAll('script:not([src])'))
            .filter(s => s.type !== 'application/json').length""")
        handlers = tab.evaluate("""Array.from(document.querySelectorAll('*')).filter(e =>
            Array.from(e.attributes).some(a => a.name.startsWith('on'))).length""")
        assert (inline, handlers) == (0, 0), f"{url}: {inline} inline scripts, {handlers} inline handlers"
        if width in SHOT_WIDTHS:
            SHOTS.mkdir(parents=True, exist_ok=True)
            _screenshot(tab, SHOTS / f"{name}-{width}.png")
    if status == 404:  # Chromium logs the 404 answer itself; nothing else may be logged
        errors[:] = [e for e in errors if "status of 404" not in e]
    assert errors == [], f"{url}: console errors {errors}"


def test_every_page_fits_390_768_1366_without_console_errors(customer, page):  # noqa: F811
    _strict_csp(page)
    errors = _console_errors(page)
    for url, name in (("/accounts/login/", "login"), ("/accounts/signup/", "signup"), ("/docs/api/", "api-reference")):
        _check(page, url, f"anon-{name}", errors)
    _sign_in(page)
    pages = [
        ("/dashboard/", "overview"), ("/dashboard/requests/", "requests"),
        (f"/dashboard/requests/{customer['ok']}/", "request-detail"),
        (f"/dashboard/requests/{customer['failed']}/", "request-detail-failed"),
        ("/dashboard/playground/", "playground"), ("/dashboard/keys/", "keys"), ("/dashboard/team/", "team"),
        ("/dashboard/billing/", "billing"), ("/dashboard/webhooks/", "webhooks"), ("/dashboard/settings/", "settings"),
        ("/docs/api/", "api-reference"), ("/accounts/email/", "account-email"),
        ("/accounts/password/change/", "account-password"),
    ]
    for url, name in pages:
        _check(page, url, name, errors)
    _check(page, "/dashboard/requests/req_not_there/", "not-found", errors, status=404)


def test_the_menu_collapses_on_a_phone_and_opens(customer, page):  # noqa: F811
    errors = _console_errors(page)
    _sign_in(page)
    page.set_viewport_size({"width": 390, "height": 800})
    page.goto("/dashboard/")
    toggle = page.locator("[data-menu-toggle]")
    assert toggle.is_visible() and not page.locator("#site-nav").is_visible()
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    for text in ("API reference", "Billing", "Log out"):
        assert page.locator("#site-nav").get_by_text(text).is_visible(), text
    assert page.locator(".topbar .org").inner_text() == "Acme"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "menu-open-390.png"))
    page.locator("#site-nav").get_by_text("API reference").click()
    page.wait_for_url(re.compile(r"/docs/api/$"))
    page.set_viewport_size({"width": 1366, "height": 800})
    assert not toggle.is_visible() and page.locator("#site-nav").get_by_text("Billing").is_visible()
    assert errors == []


def test_a_new_key_has_a_copy_button_and_a_first_key_call(user, organization, page):  # noqa: F811
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    errors = _console_errors(page)
    _sign_in(page)
    cta = page.locator('[data-testid="first-key-cta"]')
    assert cta.is_visible() and page.locator('[data-testid="chart-empty"]').is_visible()
    assert "Create an API key" in page.locator('[data-testid="chart-empty"]').inner_text()
    cta.get_by_role("link", name="Create an API key").click()
    page.wait_for_url(re.compile(r"/keys/#create-key$"))
    page.fill('input[name="name"]', "copied")
    page.locator('input[name="allowed_models"][value="local-preview"]').check()
    page.click('button:has-text("Create key")')
    raw = page.locator('[data-testid="new-key"]').inner_text().strip()
    page.locator('[data-testid="copy-key"]').click()
    # The clipboard answers asynchronously; the button says "Copied" for two seconds once it has.
    page.wait_for_function("document.querySelector('[data-testid=copy-key]').textContent === 'Copied'")
    assert page.evaluate("navigator.clipboard.readText()") == raw
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "keys-new-key-1366.png"), full_page=True)
    assert errors == []


def test_the_charts_have_axes_with_units_hover_values_and_stacks(customer, page):  # noqa: F811
    _strict_csp(page)
    errors = _console_errors(page)
    _sign_in(page)
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto("/dashboard/")
    page.wait_for_function("window.imagegateCharts && window.imagegateCharts.length === 2")
    axes = page.evaluate("window.imagegateCharts.map(c => c.options.scales.y.title.text + ' / ' "
                         "+ c.options.scales.x.title.text)")
    assert axes[0].startswith("Spend (US dollars) / Day (") and axes[1].startswith("Images / Day (")
    stacks = page.evaluate("window.imagegateCharts.map(c => c.data.datasets.map(d => d.label))")
    assert stacks == [["local-preview"], ["local-preview"]]
    page.get_by_label("API key").check()
    stacks = page.evaluate("window.imagegateCharts[1].data.datasets.map(d => [d.label.split(' (')[0], "
                           "d.data.reduce((a, b) => a + b, 0)])")
    assert sorted(stacks) == [["batch jobs", 1], ["test key", 2]]
    # Hover the last day's bar of the spend chart: the tooltip shows the value in dollars.
    canvas = page.locator("#spend-chart canvas")
    point = page.evaluate("""(() => { const c = window.imagegateCharts[0];
        const bar = c.getDatasetMeta(0).data.at(-1); return [bar.x, bar.y + 2]; })()""")
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + point[0], box["y"] + point[1])
    page.wait_for_function("window.imagegateCharts[0].tooltip.opacity > 0")
    body = page.evaluate("window.imagegateCharts[0].tooltip.body.map(b => b.lines.join(' '))")
    footer = page.evaluate("window.imagegateCharts[0].tooltip.footer")
    assert any(re.search(r": \$0\.00[0-9]+$", line) for line in body), body
    assert footer and footer[0] == "Total: $0.003", footer
    page.screenshot(path=str(SHOTS / "chart-hover-1366.png"))
    assert errors == []
