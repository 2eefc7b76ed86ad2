"""The request's page (issue 15, item 5): its prompt, kept per the organization's retention and deletable; the full
error message; truthful image counts and retention notes. Requests are made through the official SDK against the
live server; the pages are read through Django's test client."""
import re
import time
from datetime import timedelta

import openai
import pytest
from django.urls import reverse
from django.utils import timezone

from accounts import services as account_services
from accounts.models import Membership
from config import process_cache
from generation import prompts
from generation.models import RequestText


@pytest.fixture
def signed_in(client, user, organization):
    client.force_login(user)
    return client


def _detail(client, request_id) -> str:
    response = client.get(reverse("request-detail", args=[request_id]))
    assert response.status_code == 200
    return response.content.decode()


def _testid(html, name) -> str:
    found = re.search(rf'data-testid="{name}">(.*?)</', html, re.S)
    return found.group(1).strip() if found else ""


def test_a_success_shows_its_prompt_images_and_how_long_they_are_kept(openai_client, signed_in, organization):
    raw = openai_client.images.with_raw_response.generate(model="local-preview", prompt="A red fox <in> the snow",
                                                          size="256x256", n=2)
    request_id = raw.headers["x-request-id"]
    html = _detail(signed_in, request_id)
    assert _testid(html, "prompt") == "A red fox &lt;in&gt; the snow"
    assert "Kept until" in html and "30 days" in html
    assert re.search(r'id="detail-images">2<', html) and "2 requested, 2 made" in html
    assert "Images are kept for 60 minutes after the request" in _testid(html, "images-note")
    assert html.count('<img src="/images/') == 2
    text = RequestText.objects.for_organization(organization).get(request_id=request_id)
    assert (timedelta(days=30) - (text.prompt_expires_at - text.created_at)) < timedelta(seconds=1)


def test_a_failure_shows_the_full_message_and_no_images(openai_client, signed_in, organization):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(model="local-preview", prompt="A green field", size="7x7", n=3)
    request_id = info.value.response.headers["x-request-id"]
    html = _detail(signed_in, request_id)
    assert _testid(html, "error-message") == info.value.body["message"].replace("'", "&#x27;")
    assert "256x256" in _testid(html, "error-message")  # the message names the sizes; the code alone did not
    assert re.search(r'id="detail-images">0<', html) and "3 requested" in html
    assert _testid(html, "images-note") == "This request made no images."
    assert "kept for a limited time" not in html
    assert _testid(html, "prompt") == "A green field"


def test_a_prompt_can_be_deleted_and_expires_with_the_retention(openai_client, signed_in, organization):
    ids = [openai_client.images.with_raw_response.generate(model="local-preview", prompt=f"prompt {i}",
                                                           size="256x256").headers["x-request-id"]
           for i in range(3)]
    # Deleted by the customer.
    response = signed_in.post(reverse("request-prompt-delete", args=[ids[0]]))
    assert response.status_code == 302
    html = _detail(signed_in, ids[0])
    assert 'data-testid="prompt"' not in html and "Deleted by a member" in _testid(html, "prompt-gone")
    # Past its retention: hidden at once, blanked by the purge.
    RequestText.objects.for_organization(organization).filter(request_id=ids[1]).update(
        prompt_expires_at=timezone.now() - timedelta(seconds=1))
    assert "Deleted after the retention period" in _testid(_detail(signed_in, ids[1]), "prompt-gone")
    assert prompts.purge_expired() == 1
    assert RequestText.objects.for_organization(organization).get(request_id=ids[1]).prompt == ""
    assert RequestText.objects.for_organization(organization).get(request_id=ids[2]).prompt == "prompt 2"
    # Retention 0: the kept prompts go, and new ones are not stored.
    response = signed_in.post(reverse("prompt-retention"), {"prompt_retention_days": "0"})
    assert response.status_code == 302
    assert RequestText.objects.for_organization(organization).exclude(prompt="").count() == 0
    time.sleep(2 * process_cache.POLL_SECONDS)  # every process has dropped its cached organization
    new = openai_client.images.with_raw_response.generate(model="local-preview", prompt="not kept",
                                                          size="256x256").headers["x-request-id"]
    assert not RequestText.objects.for_organization(organization).filter(request_id=new).exists()
    assert "does not store prompts" in _detail(signed_in, new)


def test_retention_shortened_applies_to_kept_prompts(organization, api_key):
    text = prompts.row_for(organization=organization, request_id="req_old", prompt="old")
    text.created_at = timezone.now() - timedelta(days=10)
    text.save()
    prompts.set_retention(organization=organization, days=7)
    assert prompts.purge_expired() == 1
    with pytest.raises(ValueError):
        account_services.set_prompt_retention(organization=organization, days=366)


def test_members_see_prompts_but_cannot_delete_them(openai_client, client, organization):
    request_id = openai_client.images.with_raw_response.generate(
        model="local-preview", prompt="kept", size="256x256").headers["x-request-id"]
    member, _ = account_services.get_or_create_user(email="member@example.com", password="a-long-enough-passphrase")
    Membership.all_tenants_unsafe.create(organization=organization, user=member, role="member")
    client.force_login(member)
    html = _detail(client, request_id)
    assert _testid(html, "prompt") == "kept" and 'data-testid="delete-prompt"' not in html
    assert client.post(reverse("request-prompt-delete", args=[request_id])).status_code == 403
    assert client.post(reverse("prompt-retention"), {"prompt_retention_days": "1"}).status_code == 403


def test_the_purge_runs_as_a_periodic_celery_task(organization, settings):
    from generation.tasks import purge_prompts

    assert settings.CELERY_BEAT_SCHEDULE["purge-prompts"] == {"task": "generation.tasks.purge_prompts",
                                                              "schedule": 600.0}
    text = prompts.row_for(organization=organization, request_id="req_due", prompt="due")
    text.prompt_expires_at = timezone.now() - timedelta(minutes=1)
    text.save()
    assert purge_prompts.apply().get() == 1
    gone = RequestText.objects.for_organization(organization).get(request_id="req_due")
    assert (gone.prompt, gone.prompt_deleted_reason) == ("", RequestText.Removal.EXPIRED)
