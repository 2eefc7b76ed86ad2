"""The playground page uses the same generation service as the API: the ledger records it and moderation applies.

Transactional: the service does its database work on its own threads (config/db.py), which must see the data."""
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
