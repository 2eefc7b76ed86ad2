"""The playground: type a prompt, pick a model and size, see the image and what it cost.

It calls the same generation service as the API (validation, moderation, routing, ledger, spend limits); the
request is recorded in the ledger without an API key (the member's session made it)."""
from asgiref.sync import async_to_sync
from django import forms
from django.shortcuts import render
from redis.exceptions import RedisError

from accounts import roles
from accounts.access import organization_page
from config.http.middleware import new_request_id
from generation import catalog, lifecycle
from generation.errors import APIError
from generation.pipeline import ratelimit
from generation.pipeline import service as services
from generation.providers import registry


def _models() -> list[catalog.ModelSpec]:
    """The models the playground offers: those served here that generate, retired ones left out."""
    registry()
    table = lifecycle.table()
    return [m for m in catalog.available_models(set(registry()))
            if m.supports("generate") and lifecycle.of(m.id, table).effective_status() != lifecycle.RETIRED]


class PlaygroundForm(forms.Form):
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "placeholder": "A lighthouse in a storm"}),
                             max_length=32000)
    model = forms.ChoiceField()
    size = forms.CharField(max_length=20, initial="1024x1024",
                           help_text="One of the model's sizes (listed beside the model).")
    n = forms.IntegerField(min_value=1, max_value=4, initial=1)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(m.id, m.id) for m in _models()]


@organization_page(roles.VIEW_USAGE, post=roles.GENERATE_IMAGES)
def playground(request):
    membership = request.membership
    may_generate = membership.has_perm(roles.GENERATE_IMAGES)
    form = PlaygroundForm(request.POST or None, initial={"model": catalog.DEFAULT_MODEL})
    result, error = None, None
    if request.method == "POST" and form.is_valid():
        try:
            decision = ratelimit.check_playground(request.user, membership.organization)
        except RedisError:
            decision = None  # the limiter is down: as on the API, serve rather than refuse
        if decision is not None and not decision.allowed:
            error = decision.message()
            form = PlaygroundForm(request.POST, initial={"model": catalog.DEFAULT_MODEL})
            form.is_valid()
            return render(request, "dashboard/playground.html", {
                "form": form, "result": None, "error": error, "may_generate": may_generate,
                "model_sizes": [(m.id, ", ".join(m.sizes)) for m in _models()],
            }, status=429)
        data = {"model": form.cleaned_data["model"], "prompt": form.cleaned_data["prompt"],
                "size": form.cleaned_data["size"], "n": form.cleaned_data["n"]}
        spec = catalog.get_model(data["model"])
        if spec is not None and spec.response_formats:
            data["response_format"] = "url"
        try:
            outcome = async_to_sync(services.run)(
                endpoint="generations", organization=membership.organization, api_key=None,
                request_id=getattr(request, "request_id", None) or new_request_id(), data=data,
                base_url=request.build_absolute_uri("/"),
            )
            result = {"body": outcome.body, "provider": outcome.provider,
                      "images": [item.get("url") or f"data:image/png;base64,{item['b64_json']}"
                                 for item in outcome.body["data"]]}
        except APIError as exc:
            error = exc.message
    return render(request, "dashboard/playground.html", {
        "form": form, "result": result, "error": error, "may_generate": may_generate,
        "model_sizes": [(m.id, ", ".join(m.sizes)) for m in _models()],
    })
