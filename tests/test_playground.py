"""The playground page uses the same generation service as the API: the ledger records it and moderation applies.

Transactional: the service does its database work on its own threads (config/db.py), which must see the data."""
import re

import pytest
from django.urls import reverse

from billing.models import LedgerEntry


@pytest.fixture
def signed_in(transactional_db, client, user, organization, prices):
    client.force_login(user)
    return client


def test_playground_generates_and_shows_the_cost(signed_in, organization):
    response = signed_in.post(reverse("playground"), {"prompt": "a red kite", "model": "local-preview",
                                                      "size": "256x256", "n": 2})
    assert response.status_code == 200
    content = response.content.decode()
    assert 'data-testid="playground-result"' in content and "$0.002" in content
    assert content.count("<img src=\"http") == 2
    row = LedgerEntry.objects.for_organization(organization).get()
    assert (row.status, row.n, row.cost_micros, row.api_key_id) == ("succeeded", 2, 2000, None)


def test_playground_shows_validation_and_policy_errors(signed_in, organization):
    response = signed_in.post(reverse("playground"), {"prompt": "x", "model": "local-preview", "size": "7x7", "n": 1})
    assert response.status_code == 400 and b"7x7 is not one of the available choices" in response.content
    response = signed_in.post(reverse("playground"), {"prompt": "forbidden-test-term", "model": "local-preview",
                                                      "size": "256x256", "n": 1})
    assert b"safety system" in response.content
    assert LedgerEntry.objects.for_organization(organization).filter(cost_micros__gt=0).count() == 0


def test_playground_offers_the_models_sizes_and_the_apis_limits(signed_in, organization):
    from generation import catalog

    html = signed_in.get(reverse("playground")).content.decode()
    spec = catalog.get_model(catalog.DEFAULT_MODEL)
    size_select = html[html.index('name="size"'):html.index("</select>", html.index('name="size"'))]
    assert [re.sub(r"\s", "", s) for s in re.findall(r'<option value="([^"]+)"', size_select)][:len(spec.sizes)] == \
        list(spec.sizes)
    assert f'max="{spec.max_n}"' in html and f'maxlength="{spec.max_prompt_chars}"' in html
    assert '<script id="model-limits" type="application/json">' in html and "js/playground.js" in html
    # The API's limits, not the page's own: n up to the model's max_n (10), the model's prompt length.
    response = signed_in.post(reverse("playground"), {"prompt": "x", "model": "local-preview", "size": "256x256",
                                                      "n": spec.max_n + 1})
    assert response.status_code == 400 and f"at most {spec.max_n} images".encode() in response.content
    response = signed_in.post(reverse("playground"), {"prompt": "x" * (spec.max_prompt_chars + 1),
                                                      "model": "local-preview", "size": "256x256", "n": 1})
    assert response.status_code == 400 and f"at most {spec.max_prompt_chars:,} characters".encode() in \
        response.content
    response = signed_in.post(reverse("playground"), {"prompt": "x", "model": "local-preview", "size": "1024x1024",
                                                      "quality": "hd", "n": 1})
    errors = re.findall(r'class="error">([^<]*)<', response.content.decode())
    assert response.status_code == 400 and any("hd" in e for e in errors), errors


def test_playground_result_links_to_its_request_log_entry(signed_in, organization):
    response = signed_in.post(reverse("playground"), {"prompt": "a red kite", "model": "local-preview",
                                                      "size": "256x256", "n": 10})
    assert response.status_code == 200
    row = LedgerEntry.objects.for_organization(organization).get()
    link = reverse("request-detail", args=[row.request_id])
    assert f'href="{link}" data-testid="playground-log-link"' in response.content.decode()
    assert row.n == 10
