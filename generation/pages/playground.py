"""The playground: type a prompt, pick a model, one of its sizes and qualities, see the image, what it cost and its
entry in the request log.

It calls the same generation service as the API (validation, moderation, routing, ledger, spend limits); the
request is recorded in the ledger without an API key (the member's session made it). The form's limits are the
catalog's, the same the API enforces (generation/pipeline/validation.py): n from 1 to the model's max_n, the prompt
up to the model's max_prompt_chars, a size and quality from the model's lists."""
from asgiref.sync import async_to_sync
from django import forms
from django.shortcuts import render
from redis.exceptions import RedisError

from accounts import roles
from accounts.access import organization_page
from billing import selectors as billing_selectors
from config import db
from config.http.middleware import new_request_id
from config.observability import metrics
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


def model_limits(models: list[catalog.ModelSpec]) -> dict:
    """Per model id: {"sizes": [...], "default_size", "qualities": [...], "default_quality", "max_n",
    "max_prompt_chars"}; the page's script (static/js/playground.js) narrows the selects to the chosen model."""
    return {m.id: {"sizes": list(m.sizes), "default_size": m.default_size, "qualities": list(m.qualities),
                   "default_quality": m.default_quality, "max_n": m.max_n, "max_prompt_chars": m.max_prompt_chars}
            for m in models}


class PlaygroundForm(forms.Form):
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "placeholder": "A red fox in a snowy forest"}))
    model = forms.ChoiceField()
    size = forms.ChoiceField(help_text="The sizes the chosen model makes.")
    quality = forms.ChoiceField(required=False, help_text="Empty: the model's default quality.")
    n = forms.IntegerField(min_value=1, initial=1, label="Images (n)")

    def __init__(self, *args, models: list[catalog.ModelSpec], **kwargs):
        super().__init__(*args, **kwargs)
        self.specs = {m.id: m for m in models}
        chosen = self.specs.get(self.data.get("model") or self.initial.get("model") or catalog.DEFAULT_MODEL)
        chosen = chosen or (models[0] if models else None)
        self.fields["model"].choices = [(m.id, m.id) for m in models]
        # Every model's sizes and qualities are valid choices; clean() checks them against the chosen model. The
        # select shows the chosen model's, and the script narrows it when the model changes.
        self.fields["size"].choices = [(s, s) for s in dict.fromkeys(s for m in models for s in m.sizes)]
        self.fields["quality"].choices = [(q, q) for q in dict.fromkeys(q for m in models for q in m.qualities)]
        if chosen is not None:
            self.fields["size"].choices = [(s, s) for s in chosen.sizes] + [
                c for c in self.fields["size"].choices if c[0] not in chosen.sizes]
            self.fields["quality"].choices = [(q, q) for q in chosen.qualities] + [
                c for c in self.fields["quality"].choices if c[0] not in chosen.qualities]
            self.fields["size"].initial = chosen.default_size
            self.fields["quality"].initial = chosen.default_quality
            self.fields["n"].max_value = chosen.max_n
            self.fields["n"].widget.attrs["max"] = chosen.max_n
            self.fields["prompt"].widget.attrs["maxlength"] = chosen.max_prompt_chars
            self.fields["prompt"].help_text = f"Up to {chosen.max_prompt_chars:,} characters for {chosen.id}."

    def clean(self):
        data = super().clean()
        spec = self.specs.get(data.get("model"))
        if spec is None:
            return data
        if data.get("size") and data["size"] not in spec.sizes:
            self.add_error("size", f"{spec.id} makes {', '.join(spec.sizes)}; not {data['size']}.")
        if not data.get("quality"):
            data["quality"] = spec.default_quality
        elif data["quality"] not in spec.qualities:
            self.add_error("quality", f"{spec.id} offers {', '.join(spec.qualities)}; not {data['quality']}.")
        if data.get("n") is not None and data["n"] > spec.max_n:
            self.add_error("n", f"{spec.id} makes at most {spec.max_n} images per request.")
        if data.get("prompt") and len(data["prompt"]) > spec.max_prompt_chars:
            self.add_error("prompt", f"{spec.id} takes prompts of at most {spec.max_prompt_chars:,} characters; "
                                     f"this one has {len(data['prompt']):,}.")
        return data


def _context(form, models, *, may_generate, result=None, error=None, failed_entry=None) -> dict:
    return {"form": form, "result": result, "error": error, "failed_entry": failed_entry,
            "may_generate": may_generate, "model_limits": model_limits(models)}


async def _run_on_this_loop(**kwargs):
    """services.run, leaving no database pool behind on an event loop made for this call alone.

    Under the ASGI server async_to_sync runs the pipeline on the server's own loop, whose pool stays open; called
    from a thread without a loop (the test client, a management command) it gets a loop of its own that ends with
    the call, and a pool left open on it keeps tasks that hang the loop's shutdown."""
    fresh = not db.has_async_pool()
    try:
        return await services.run(**kwargs)
    finally:
        if fresh:
            await db.close_async_pools()


@organization_page(roles.VIEW_USAGE, post=roles.GENERATE_IMAGES)
def playground(request):
    membership = request.membership
    may_generate = membership.has_perm(roles.GENERATE_IMAGES)
    models = _models()
    form = PlaygroundForm(request.POST or None, initial={"model": catalog.DEFAULT_MODEL}, models=models)
    if request.method != "POST" or not form.is_valid():
        return render(request, "dashboard/playground.html", _context(form, models, may_generate=may_generate),
                      status=400 if request.method == "POST" else 200)
    try:
        decision = ratelimit.check_playground(request.user, membership.organization)
    except RedisError:
        decision = None  # the limiter is down: as on the API, serve rather than refuse
    if decision is not None and not decision.allowed:
        metrics.count_rate_limit_refusal(decision.binding.scope)
        return render(request, "dashboard/playground.html",
                      _context(form, models, may_generate=may_generate, error=decision.message()), status=429)
    data = {key: form.cleaned_data[key] for key in ("model", "prompt", "size", "quality", "n")}
    spec = catalog.get_model(data["model"])
    if spec is not None and spec.response_formats:
        data["response_format"] = "url"
    request_id = getattr(request, "request_id", None) or new_request_id()
    try:
        outcome = async_to_sync(_run_on_this_loop)(
            endpoint="generations", organization=membership.organization, api_key=None,
            request_id=request_id, data=data, base_url=request.build_absolute_uri("/"),
        )
    except APIError as exc:
        failed = billing_selectors.request_entry(organization=membership.organization, request_id=request_id)
        return render(request, "dashboard/playground.html",
                      _context(form, models, may_generate=may_generate, error=exc.message, failed_entry=failed))
    entry = billing_selectors.request_entry(organization=membership.organization,
                                            request_id=outcome.request_id or request_id)
    result = {"body": outcome.body, "provider": outcome.provider, "entry": entry,
              "images": [item.get("url") or f"data:image/png;base64,{item['b64_json']}"
                         for item in outcome.body["data"]]}
    return render(request, "dashboard/playground.html", _context(form, models, may_generate=may_generate,
                                                                 result=result))
