"""The dashboard's Webhooks page: the organization's endpoints (add, rotate the secret, delete; a new secret is
shown once) and the delivery log (event, endpoint, status, attempts, the last response code) with "Resend".
Managing endpoints needs the manage-keys permission (a secret is a credential, as a key is). The logic is
generation/pipeline/webhooks.py's; this module only reads the form and renders."""
from django.contrib import messages
from django.shortcuts import render

from accounts import roles
from accounts.access import organization_page
from generation.pipeline import webhooks


@organization_page(roles.MANAGE_KEYS)
def webhooks_page(request):
    org = request.organization
    shown_secret, error = None, None
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            if action == "create":
                endpoint = webhooks.create_endpoint(org, url=request.POST.get("url", ""),
                                                    description=request.POST.get("description", "")[:200])
                shown_secret = (endpoint, endpoint.secret)
                messages.success(request, "Endpoint added. Copy its signing secret now: it will not be shown again.")
            elif action == "rotate":
                endpoint = webhooks.rotate_secret(org, request.POST.get("endpoint", ""))
                shown_secret = (endpoint, endpoint.secret)
                messages.success(request, "New signing secret. The previous one also signs for 24 hours.")
            elif action == "delete":
                webhooks.delete_endpoint(org, request.POST.get("endpoint", ""))
                messages.success(request, "Endpoint deleted.")
            elif action == "resend":
                from generation.tasks import deliver_webhook

                raw = request.POST.get("delivery", "")
                delivery = webhooks.resend(org, int(raw) if raw.isdigit() else -1)
                deliver_webhook.delay(delivery.pk)
                messages.success(request, f"Event {delivery.event_id} is being sent again.")
            else:
                error = "Unknown action."
        except webhooks.EndpointError as exc:
            error = exc.message
        except webhooks.EndpointNotFound:
            error = "No such endpoint or delivery."
    return render(request, "dashboard/webhooks.html", {
        "endpoints": webhooks.endpoints(org), "deliveries": webhooks.log(org), "shown_secret": shown_secret,
        "error": error, "events": webhooks.EVENTS,
    }, status=400 if error else 200)
