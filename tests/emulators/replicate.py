"""An in-memory Replicate HTTP API (docs/providers/replicate.md) for tests and the capacity benchmark.

    with emulator() as rep:                  # rep.url, rep.faults, rep.requests, rep.state
        rep.state["delay"] = 5.0             # seconds a prediction runs before it is done (default 0.05)
        rep.state["rate_limit"] = 600        # predictions created per minute before 429 (default: off;
                                             #   Replicate's own limit is RATE_LIMIT = 600/min)

Wire format (https://replicate.com/docs/reference/http), `Authorization: Bearer <API_TOKEN>` (or `Token <API_TOKEN>`):
- POST /v1/models/{owner}/{name}/predictions `{"input": {...}}` for the official models (black-forest-labs/flux-schnell,
  black-forest-labs/flux-dev); POST /v1/predictions `{"version": "<id>" | "<owner>/<name>:<id>", "input": {...}}` for
  the community models (stability-ai/stable-diffusion, stability-ai/sdxl; see VERSIONS). Both answer 201 with a
  prediction object {id, model, version, input, logs, output, data_removed, error, status, created_at, started_at,
  completed_at, metrics, urls{get, cancel, stream, web}}.
- `Prefer: wait` / `Prefer: wait=N` (1–60): the request is held until the prediction is done or N seconds passed, and
  answers the prediction in whatever status it then has (starting, processing, succeeded, failed, canceled).
- GET /v1/predictions/{id}; POST /v1/predictions/{id}/cancel.
- Outputs: a list of URLs served by this emulator, GET /files/<id>-<i>.png (no auth, like replicate.delivery).
- Errors are problem+json {title, detail, status}: 401 {"title": "Unauthenticated", "detail": "You did not pass a valid
  authentication token", "status": 401}; 404 unknown model/prediction; 422 "Input validation failed" with a detail of
  "- input.<field>: <reason>" lines and `invalid_fields`, or "Invalid version or not permitted"; 429 "Request was
  throttled" with Retry-After.
- Validation follows each model's published input schema: num_outputs 1–4, FLUX aspect ratios and megapixels,
  num_inference_steps ranges, output formats, SD width/height in multiples of 64 (SD 2.1: 64–1024), schedulers, types.

Safety: a prompt containing "forbidden-upstream" → the prediction fails with Replicate's NSFW error text.

Faults (emulator.faults.set(name, Fault(...))), names "create", "get", "cancel", "file":
- status=...: answer with that status; `body` (dict → JSON, str/bytes raw; default: a problem+json for the status,
  429 with retry-after 30) and `headers`;
- delay=...: wait before answering (asyncio.sleep, never blocks);
- kind="malformed": HTTP 2xx with an HTML page (or `body` as given); on "file", bytes that are not an image;
- kind="missing_fields" (create/get): 2xx JSON without id/status;
- on "create", the prediction's fate: kind="failed" (error = `body` or a CUDA error), "nsfw", "canceled" (canceled
  when it would finish), "stuck" (never finishes), "short" (one output fewer than num_outputs), "string_output"
  (output is one URL string, not a list), "no_output" (succeeded with output null), "bad_image" (output files are
  not images).
"""
import asyncio
import contextlib
import datetime
import functools
import hashlib
import json
import math
import time
import uuid
from collections import deque

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .base import Fault, Faults, Recorded, make_png, serve

API_TOKEN = "r8_emulatorTestToken0123456789abcdef"
RATE_LIMIT = 600  # Replicate's documented limit on creating predictions, per minute
DEFAULT_DELAY = 0.05
MAX_KEPT = 100_000  # predictions kept in memory; the oldest are forgotten beyond that (long benchmarks)
NSFW_ERROR = "NSFW content detected. Try running it again, or try a different prompt."

FLUX_RATIOS = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]
SD_SIDES = list(range(64, 1025, 64))

# Input schemas: field → (type, constraints). Types: string, integer, number, boolean; `enum`, `min`, `max`,
# `multiple_of`, `required`.
_FLUX_COMMON = {
    "prompt": ("string", {"required": True}),
    "aspect_ratio": ("string", {"enum": FLUX_RATIOS}),
    "num_outputs": ("integer", {"min": 1, "max": 4}),
    "seed": ("integer", {}),
    "output_format": ("string", {"enum": ["webp", "jpg", "png"]}),
    "output_quality": ("integer", {"min": 0, "max": 100}),
    "disable_safety_checker": ("boolean", {}),
    "go_fast": ("boolean", {}),
    "megapixels": ("string", {"enum": ["1", "0.25"]}),
}
FLUX_SCHNELL_SCHEMA = {**_FLUX_COMMON, "num_inference_steps": ("integer", {"min": 1, "max": 4})}
FLUX_DEV_SCHEMA = {
    **_FLUX_COMMON,
    "num_inference_steps": ("integer", {"min": 1, "max": 50}),
    "guidance": ("number", {"min": 0, "max": 10}),
    "image": ("string", {}),
    "prompt_strength": ("number", {"min": 0, "max": 1}),
}
SD_SCHEMA = {
    "prompt": ("string", {"required": True}),
    "negative_prompt": ("string", {}),
    "width": ("integer", {"enum": SD_SIDES}),
    "height": ("integer", {"enum": SD_SIDES}),
    "num_outputs": ("integer", {"min": 1, "max": 4}),
    "num_inference_steps": ("integer", {"min": 1, "max": 500}),
    "guidance_scale": ("number", {"min": 1, "max": 20}),
    "scheduler": ("string", {"enum": ["DDIM", "K_EULER", "DPMSolverMultistep", "K_EULER_ANCESTRAL", "PNDM",
                                      "KLMS"]}),
    "seed": ("integer", {}),
}
SDXL_SCHEMA = {
    "prompt": ("string", {"required": True}),
    "negative_prompt": ("string", {}),
    "image": ("string", {}),
    "mask": ("string", {}),
    "width": ("integer", {"min": 64, "max": 2048, "multiple_of": 64}),
    "height": ("integer", {"min": 64, "max": 2048, "multiple_of": 64}),
    "num_outputs": ("integer", {"min": 1, "max": 4}),
    "scheduler": ("string", {"enum": ["DDIM", "DPMSolverMultistep", "HeunDiscrete", "KarrasDPM",
                                      "K_EULER_ANCESTRAL", "K_EULER", "PNDM"]}),
    "num_inference_steps": ("integer", {"min": 1, "max": 500}),
    "guidance_scale": ("number", {"min": 1, "max": 50}),
    "prompt_strength": ("number", {"min": 0, "max": 1}),
    "seed": ("integer", {}),
    "refine": ("string", {"enum": ["no_refiner", "expert_ensemble_refiner", "base_image_refiner"]}),
    "high_noise_frac": ("number", {"min": 0, "max": 1}),
    "refine_steps": ("integer", {}),
    "apply_watermark": ("boolean", {}),
    "lora_scale": ("number", {"min": 0, "max": 1}),
    "disable_safety_checker": ("boolean", {}),
}


def _version_id(slug: str) -> str:
    return hashlib.sha256(slug.encode()).hexdigest()


# Official models: run by name. slug → (latest version id, schema).
OFFICIAL = {
    "black-forest-labs/flux-schnell": ("c846a69991daf4c0e5d016514849d14ee5b2e6846ce6b9d6f21369e564cfe51e",
                                       FLUX_SCHNELL_SCHEMA),
    "black-forest-labs/flux-dev": (_version_id("black-forest-labs/flux-dev"), FLUX_DEV_SCHEMA),
}
# Community models: run by version. version id → (slug, schema).
VERSIONS = {
    "ac732df83cea7fff18b8472768c88ad041fa750ff7682a21affe81863cbe77e4": ("stability-ai/stable-diffusion", SD_SCHEMA),
    "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b": ("stability-ai/sdxl", SDXL_SCHEMA),
}
COMMUNITY = {slug for slug, _ in VERSIONS.values()}

_TOP_LEVEL = {"input", "webhook", "webhook_events_filter", "stream"}
_PREDICTION_KINDS = {"failed", "nsfw", "canceled", "stuck", "short", "string_output", "no_output", "bad_image"}


@functools.lru_cache(maxsize=8192)
def _png(name: str) -> bytes:
    return make_png(name, 64, 64)


def image_bytes(prediction_id: str, index: int) -> bytes:
    """The PNG served for output `index` of a prediction (tests compare downloads with it)."""
    return _png(f"{prediction_id}-{index}")


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="microseconds") \
        .replace("+00:00", "Z")


def problem(status: int, title: str, detail: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"title": title, "detail": detail, "status": status, **extra}, status_code=status,
                        headers=headers, media_type="application/problem+json")


_DEFAULT_PROBLEMS = {
    400: ("Bad Request", "The request could not be understood."),
    401: ("Unauthenticated", "You did not pass a valid authentication token"),
    402: ("Insufficient credit", "You have insufficient credit to run this model. Go to "
                                 "https://replicate.com/account/billing#billing to purchase credit. Once you purchase "
                                 "credit, please wait a few minutes before trying again."),
    403: ("Forbidden", "You do not have permission to perform this action."),
    404: ("Not found", "The requested resource could not be found."),
    429: ("Request was throttled", "Request was throttled. Your rate limit resets in ~30s."),
    500: ("Internal Server Error", "An unexpected error occurred."),
    502: ("Bad Gateway", "Bad gateway."),
    503: ("Service Unavailable", "Replicate is temporarily unavailable."),
}


def _fault_response(fault: Fault) -> Response:
    status = fault.status
    headers = dict(fault.headers)
    if status == 429:
        headers.setdefault("retry-after", "30")
    if fault.body is None:
        title, detail = _DEFAULT_PROBLEMS.get(status, ("Error", f"HTTP {status}"))
        return problem(status, title, detail, headers=headers)
    if isinstance(fault.body, (dict, list)):
        return JSONResponse(fault.body, status_code=status, headers=headers)
    return Response(fault.body, status_code=status, headers=headers, media_type=headers.get("content-type",
                                                                                                 "text/plain"))


def _malformed(fault: Fault, status: int = 200) -> Response:
    body = fault.body if fault.body is not None else "<html><body>502 Bad Gateway</body></html>"
    if isinstance(body, (dict, list)):
        return JSONResponse(body, status_code=status)
    return Response(body, status_code=status, media_type="text/html")


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _fmt(value) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value)


def validate(schema: dict, inp: dict) -> list[dict]:
    """Replicate's `invalid_fields` for `inp` against a model's input schema (unknown fields are ignored)."""
    errors = []
    for name, (kind, rules) in schema.items():
        if name not in inp:
            if rules.get("required"):
                errors.append({"type": "required", "field": "input", "description": f"{name} is required"})
            continue
        value, field = inp[name], f"input.{name}"
        given = _json_type(value)
        ok = given == kind or (kind == "number" and given == "integer")
        if not ok:
            errors.append({"type": "invalid_type", "field": field,
                           "description": f"Invalid type. Expected: {kind}, given: {given}"})
            continue
        if "enum" in rules and value not in rules["enum"]:
            options = ", ".join(_fmt(v) for v in rules["enum"])
            errors.append({"type": "enum", "field": field,
                           "description": f"{name} must be one of the following: {options}"})
            continue
        if "min" in rules and value < rules["min"]:
            errors.append({"type": "number_gte", "field": field,
                           "description": f"Must be greater than or equal to {rules['min']}"})
        elif "max" in rules and value > rules["max"]:
            errors.append({"type": "number_lte", "field": field,
                           "description": f"Must be less than or equal to {rules['max']}"})
        elif "multiple_of" in rules and value % rules["multiple_of"]:
            errors.append({"type": "multiple_of", "field": field,
                           "description": f"Must be a multiple of {rules['multiple_of']}"})
    return errors


def validation_failed(errors: list[dict]) -> JSONResponse:
    detail = "".join(f"- {e['field']}: {e['description']}\n" if e["field"] else f"- {e['description']}\n"
                     for e in errors)
    return problem(422, "Input validation failed", detail, invalid_fields=errors)


def build_app(faults: Faults, requests: list, state: dict) -> Starlette:
    def predictions() -> dict:
        return state.setdefault("predictions", {})

    async def record(request: Request) -> None:
        requests.append(Recorded(method=request.method, path=request.url.path, headers=dict(request.headers),
                                 body=await request.body()))

    def authorized(request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() in ("bearer", "token") and token.strip() == API_TOKEN

    def unauthenticated() -> JSONResponse:
        return problem(401, *_DEFAULT_PROBLEMS[401])

    async def injected(name: str, *, ok_status: int = 200) -> tuple[Response | None, Fault | None]:
        """Apply the fault for `name`: sleep its delay; (the response it forces or None, the fault or None)."""
        fault = faults.take(name)
        if fault is None:
            return None, None
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status is not None:
            return _fault_response(fault), fault
        if fault.kind == "malformed":
            if name == "file":
                body = fault.body if fault.body is not None else b"GIF89a-this-is-not-a-png"
                return Response(body, media_type="image/png"), fault
            return _malformed(fault, ok_status), fault
        if fault.kind == "missing_fields" and name != "file":
            return JSONResponse({"detail": "ok", "urls": {}}, status_code=ok_status), fault
        return None, fault

    def throttled() -> Response | None:
        limit = state.get("rate_limit")
        if not limit:
            return None
        window: deque = state.setdefault("_rate_window", deque())
        now = time.monotonic()
        while window and now - window[0] >= 60.0:
            window.popleft()
        if len(window) >= limit:
            resets = max(1, math.ceil(60.0 - (now - window[0])))
            return problem(429, "Request was throttled",
                           f"Request was throttled. Your rate limit resets in ~{resets}s.",
                           headers={"retry-after": str(resets)})
        window.append(now)
        return None

    # --- predictions ---------------------------------------------------------------------------------------

    def advance(p: dict) -> dict:
        """Bring a prediction's status up to date (lazily: no background tasks)."""
        if p["status"] in ("succeeded", "failed", "canceled"):
            return p
        elapsed = time.monotonic() - p["m0"]
        if elapsed >= p["duration"] and p["kind"] != "stuck":
            finish(p)
        elif elapsed >= p["duration"] * 0.1 or p["kind"] == "stuck":
            if p["status"] == "starting":
                p["status"], p["started_at"] = "processing", p["t0"] + p["duration"] * 0.1
                p["logs"] = f"Using seed: {p['seed']}\n"
        return p

    def finish(p: dict) -> None:
        kind, extra = p["kind"], p["kind_body"]
        p["started_at"] = p["started_at"] or p["t0"] + p["duration"] * 0.1
        p["completed_at"] = p["t0"] + p["duration"]
        p["logs"] = f"Using seed: {p['seed']}\n"
        n = p["num_outputs"]
        if kind == "canceled":
            p["status"] = "canceled"
            return
        if kind == "nsfw" or "forbidden-upstream" in str(p["input"].get("prompt", "")):
            p["status"], p["error"] = "failed", NSFW_ERROR
            p["logs"] += NSFW_ERROR + "\n"
            return
        if kind == "failed":
            p["status"] = "failed"
            p["error"] = extra if isinstance(extra, str) else "CUDA out of memory. Tried to allocate 2.00 GiB"
            p["logs"] += "Traceback (most recent call last):\n" + p["error"] + "\n"
            return
        p["status"] = "succeeded"
        count = n - 1 if kind == "short" else n
        urls = [f"{p['base']}/files/{p['id']}-{i}.png" for i in range(count)]
        if kind == "no_output":
            p["output"] = None
        elif kind == "string_output":
            p["output"] = urls[0] if urls else None
        else:
            p["output"] = urls
        p["logs"] += f"100%|██████████| {p['steps']}/{p['steps']}\n"
        predict_time = round(p["completed_at"] - p["started_at"], 6)
        p["metrics"] = {"image_count": count, "predict_time": predict_time,
                        "total_time": round(p["completed_at"] - p["t0"], 6)}

    def public(p: dict) -> dict:
        pid, base = p["id"], p["base"]
        return {
            "id": pid,
            "model": p["model"],
            "version": p["version"],
            "input": p["input"],
            "logs": p["logs"],
            "output": p["output"],
            "data_removed": False,
            "error": p["error"],
            "status": p["status"],
            "created_at": _iso(p["t0"]),
            "started_at": _iso(p["started_at"]),
            "completed_at": _iso(p["completed_at"]),
            "metrics": p["metrics"],
            "urls": {
                "cancel": f"{base}/v1/predictions/{pid}/cancel",
                "get": f"{base}/v1/predictions/{pid}",
                "stream": f"{base}/v1/stream/{pid}",
                "web": f"https://replicate.com/p/{pid}",
            },
        }

    def wait_seconds(request: Request) -> float | None:
        for pref in request.headers.get("prefer", "").split(","):
            pref = pref.strip()
            if pref == "wait":
                return 60.0
            if pref.startswith("wait="):
                try:
                    return float(min(max(int(pref[5:]), 1), 60))
                except ValueError:
                    return None
        return None

    async def create(request: Request, slug: str | None) -> Response:
        await record(request)
        if not authorized(request):
            return unauthenticated()
        forced, fault = await injected("create", ok_status=201)
        if forced is not None:
            return forced
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return problem(400, "Invalid JSON", "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return validation_failed([{"type": "invalid_type", "field": "",
                                       "description": "Invalid type. Expected: object, given: "
                                                      f"{_json_type(body)}"}])
        allowed = _TOP_LEVEL | ({"version"} if slug is None else set())
        errors = [{"type": "additional_property_not_allowed", "field": "",
                   "description": f"Additional property {key} is not allowed"} for key in body if key not in allowed]
        if "input" not in body:
            errors.insert(0, {"type": "required", "field": "", "description": "input is required"})
        if slug is None and "version" not in body:
            errors.insert(0, {"type": "required", "field": "", "description": "version is required"})
        if errors:
            return validation_failed(errors)
        if slug is None:
            version = str(body["version"]).rpartition(":")[2]
            if version not in VERSIONS:
                return problem(422, "Invalid version or not permitted",
                               "The specified version does not exist (or perhaps you don't have permission to use "
                               "it?)")
            slug, schema = VERSIONS[version]
        else:
            if slug not in OFFICIAL:
                return problem(404, "Not found", "The requested resource could not be found.")
            version, schema = OFFICIAL[slug]
        inp = body["input"]
        if not isinstance(inp, dict):
            return validation_failed([{"type": "invalid_type", "field": "input",
                                       "description": f"Invalid type. Expected: object, given: {_json_type(inp)}"}])
        errors = validate(schema, inp)
        if errors:
            return validation_failed(errors)
        limited = throttled()
        if limited is not None:
            return limited
        kind, kind_body = (fault.kind, fault.body) if fault and fault.kind in _PREDICTION_KINDS else (None, None)
        pid = uuid.uuid4().hex[:26]
        p = {
            "id": pid, "model": slug, "version": version, "input": inp, "t0": time.time(), "m0": time.monotonic(),
            "duration": float(state.get("delay", DEFAULT_DELAY)), "kind": kind, "kind_body": kind_body,
            "num_outputs": int(inp.get("num_outputs", 1)), "seed": inp.get("seed", 42),
            "steps": inp.get("num_inference_steps", 4 if "schnell" in slug else 28),
            "base": str(request.base_url).rstrip("/"), "status": "starting", "logs": "", "output": None,
            "error": None, "started_at": None, "completed_at": None, "metrics": {},
        }
        store = predictions()
        store[pid] = p
        while len(store) > MAX_KEPT:
            del store[next(iter(store))]
        hold = wait_seconds(request)
        if hold is not None:
            until = time.monotonic() + hold
            while advance(p)["status"] in ("starting", "processing"):
                left = until - time.monotonic()
                if left <= 0:
                    break
                done_in = p["duration"] - (time.monotonic() - p["m0"])
                await asyncio.sleep(left if p["kind"] == "stuck" else min(left, max(done_in, 0.0) + 0.002))
        headers = {"preference-applied": f"wait={int(hold)}"} if hold is not None else None
        return JSONResponse(public(advance(p)), status_code=201, headers=headers)

    async def create_official(request: Request) -> Response:
        return await create(request, f"{request.path_params['owner']}/{request.path_params['name']}")

    async def create_versioned(request: Request) -> Response:
        return await create(request, None)

    async def get_prediction(request: Request) -> Response:
        await record(request)
        if not authorized(request):
            return unauthenticated()
        forced, _ = await injected("get")
        if forced is not None:
            return forced
        p = predictions().get(request.path_params["id"])
        if p is None:
            return problem(404, "Not found", "The requested resource could not be found.")
        return JSONResponse(public(advance(p)))

    async def cancel_prediction(request: Request) -> Response:
        await record(request)
        if not authorized(request):
            return unauthenticated()
        forced, _ = await injected("cancel")
        if forced is not None:
            return forced
        p = predictions().get(request.path_params["id"])
        if p is None:
            return problem(404, "Not found", "The requested resource could not be found.")
        advance(p)
        if p["status"] in ("starting", "processing"):
            now = time.time()
            p["status"], p["completed_at"] = "canceled", now
            p["started_at"] = p["started_at"] or now
        return JSONResponse(public(p))

    async def get_file(request: Request) -> Response:
        await record(request)
        forced, _ = await injected("file")
        if forced is not None:
            return forced
        name = request.path_params["name"]
        stem, _, ext = name.rpartition(".")
        pid, _, index = stem.rpartition("-")
        p = predictions().get(pid)
        if p is None or ext != "png" or not index.isdigit() or p["status"] != "succeeded" \
                or int(index) >= len(p["output"] if isinstance(p["output"], list) else [p["output"]]):
            return Response(b"Not Found", status_code=404, media_type="text/plain")
        if p["kind"] == "bad_image":
            return Response(b"<html>not an image</html>", media_type="image/png")
        return Response(image_bytes(pid, int(index)), media_type="image/png")

    routes = [
        Route("/v1/models/{owner}/{name}/predictions", create_official, methods=["POST"]),
        Route("/v1/predictions", create_versioned, methods=["POST"]),
        Route("/v1/predictions/{id}", get_prediction, methods=["GET"]),
        Route("/v1/predictions/{id}/cancel", cancel_prediction, methods=["POST"]),
        Route("/files/{name}", get_file, methods=["GET"]),
    ]
    return Starlette(routes=routes)


@contextlib.contextmanager
def emulator():
    """A running Replicate emulator: `.url`, `.faults`, `.requests`, `.state` (see the module docstring)."""
    faults, requests, state = Faults(), [], {}
    with serve(build_app(faults, requests, state), faults=faults, requests=requests, state=state) as emu:
        yield emu
