"""A loopback emulator of Recraft's image generation API (docs/providers/recraft.md).

    with emulator() as emu:                      # emu.url, emu.faults, emu.requests, emu.state
        provider = RecraftProvider(api_key=API_KEY, base_url=emu.url)

Routes: POST /v1/images/generations (JSON), GET /files/{name} (the signed image URLs of `response_format: url`);
any other path → 404 `text/plain` "404 page not found", as Recraft answers.

What it mirrors:
- `Authorization: Bearer <token>`: missing or wrong → 401 `text/plain` "request unauthorized";
- validation (400): JSON body, `prompt` required and within the model's limit (V3 1,000, V4 10,000 characters),
  `model` one of Recraft's (vector models too), `size` from the model's table (or its "w:h" aspect), `n` 1-6,
  `style` only on V3 and only its families, `response_format` url | b64_json, unknown fields refused. Recraft
  documents no JSON error schema; this emulator answers {"code": ..., "message": ...} (an assumption, see the docs
  page);
- a prompt containing "forbidden-upstream" → 400 {"code": "inappropriate_content", "message": "... inappropriate
  content ..."} (Recraft documents no refusal shape either: an assumption);
- success: {"created", "credits" (API units: the model's price × n), "data": [{"image_id", "b64_json" | "url"}]};
  raster models answer PNG, vector models SVG.

Faults (`emu.faults.set(name, Fault(...))`, name "generate" or "download"):
- status=...: that status; body defaults to Recraft's for it (429 "Too Many Requests" text with Retry-After: 2,
  500 "Internal Server Error" text, 401 "request unauthorized");
- kind="malformed" (200 HTML), "url" (URLs although b64_json was asked), "wrong_count" (one image fewer),
  "svg" (SVG bytes whatever the model), "bad_image", "bad_base64", "no_data", "no_credits";
- delay=seconds. `emu.state["delay"]` delays every generation.
"""
import asyncio
import base64
import contextlib
import json
import time
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .base import Faults, Recorded, make_png, serve

API_KEY = "recraft-emulator-token-0123456789"
FORBIDDEN = "forbidden-upstream"

V3_SIZES = {"1:1": "1024x1024", "2:1": "2048x1024", "1:2": "1024x2048", "3:2": "1536x1024", "2:3": "1024x1536",
            "4:3": "1365x1024", "3:4": "1024x1365", "5:4": "1280x1024", "4:5": "1024x1280", "6:10": "1024x1707",
            "14:10": "1434x1024", "10:14": "1024x1434", "16:9": "1820x1024", "9:16": "1024x1820"}
V4_SIZES = {"1:1": "1024x1024", "2:1": "1536x768", "1:2": "768x1536", "3:2": "1280x832", "2:3": "832x1280",
            "4:3": "1216x896", "3:4": "896x1216", "5:4": "1152x896", "4:5": "896x1152", "6:10": "832x1344",
            "14:10": "1280x896", "10:14": "896x1280", "16:9": "1344x768", "9:16": "768x1344"}
V4_PRO_SIZES = {"1:1": "2048x2048", "2:1": "3072x1536", "1:2": "1536x3072", "3:2": "2560x1664", "2:3": "1664x2560",
                "4:3": "2432x1792", "3:4": "1792x2432", "5:4": "2304x1792", "4:5": "1792x2304", "6:10": "1664x2688",
                "14:10": "2560x1792", "10:14": "1792x2560", "16:9": "2688x1536", "9:16": "1536x2688"}
V3_STYLES = ("any", "realistic_image", "digital_illustration", "vector_illustration", "icon", "logo_raster")
# model → (sizes by aspect, price in API units, prompt limit, vector output, takes style)
MODELS = {
    "recraftv3": (V3_SIZES, 40, 1000, False, True),
    "recraftv3_vector": (V3_SIZES, 80, 1000, True, True),
    "recraftv4": (V4_SIZES, 40, 10000, False, False),
    "recraftv4_vector": (V4_SIZES, 80, 10000, True, False),
    "recraftv4_pro": (V4_PRO_SIZES, 250, 10000, False, False),
    "recraftv4_1": (V4_SIZES, 35, 10000, False, False),
    "recraftv4_1_vector": (V4_SIZES, 80, 10000, True, False),
    "recraftv4_1_pro": (V4_PRO_SIZES, 210, 10000, False, False),
}
_FIELDS = {"prompt", "model", "n", "size", "style", "substyle", "style_id", "response_format", "negative_prompt",
           "controls", "text_layout", "image_format"}
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>'


class RecraftError(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid_request"):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code

    def response(self) -> Response:
        return JSONResponse({"code": self.code, "message": self.message}, status_code=self.status)


def default_error(status: int, headers: dict) -> Response:
    if status == 401:
        return PlainTextResponse("request unauthorized", status_code=401, headers=headers)
    if status == 429:
        return PlainTextResponse("Too Many Requests", status_code=429, headers={"Retry-After": "2", **headers})
    if status == 400:
        return RecraftError(400, "invalid request").response()
    return PlainTextResponse("Internal Server Error", status_code=status, headers=headers)


def _thumb(size: str) -> tuple[int, int]:
    w, h = (int(v) for v in size.split("x"))
    scale = 64 / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def build_app(*, faults: Faults, requests: list, state: dict, api_key: str = API_KEY) -> Starlette:
    files: dict[str, bytes] = {}

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization", "") == f"Bearer {api_key}"

    def validate(raw: bytes) -> dict:
        try:
            params = json.loads(raw)
        except ValueError:
            raise RecraftError(400, "failed to parse request body as JSON") from None
        if not isinstance(params, dict):
            raise RecraftError(400, "request body must be a JSON object")
        for key in params:
            if key not in _FIELDS:
                raise RecraftError(400, f"unknown field \"{key}\"")
        model = params.get("model") or "recraftv4_1"
        if model not in MODELS:
            raise RecraftError(400, f"invalid model \"{model}\", must be one of {', '.join(MODELS)}")
        sizes, _price, limit, _vector, takes_style = MODELS[model]
        prompt = params.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise RecraftError(400, "prompt is required")
        if len(prompt) > limit:
            raise RecraftError(400, f"prompt is too long: {len(prompt)} characters, the limit for {model} is {limit}")
        size = params.get("size") or next(iter(sizes.values()))
        if size in sizes:
            size = sizes[size]
        if size not in sizes.values():
            raise RecraftError(400, f"invalid size \"{size}\" for model {model}, supported sizes: "
                               f"{', '.join(sizes.values())}")
        n = params.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 6:
            raise RecraftError(400, "n must be an integer between 1 and 6")
        style = params.get("style")
        if style is not None:
            if not takes_style:
                raise RecraftError(400, f"style is not supported for model {model}")
            if style not in V3_STYLES:
                raise RecraftError(400, f"invalid style \"{style}\"")
        if params.get("response_format", "url") not in ("url", "b64_json"):
            raise RecraftError(400, "response_format must be one of url, b64_json")
        if FORBIDDEN in prompt:
            raise RecraftError(400, "Your prompt was rejected: it contains inappropriate content.",
                               code="inappropriate_content")
        return {**params, "model": model, "size": size, "n": n, "prompt": prompt}

    def success(request: Request, params: dict, kind: str) -> Response:
        model, n = params["model"], params["n"]
        _sizes, price, _limit, vector, _ = MODELS[model]
        count = n - 1 if kind == "wrong_count" else n
        as_url = params.get("response_format", "url") == "url" or kind == "url"
        data = []
        for i in range(count):
            blob = SVG if vector or kind == "svg" else make_png(f"{model}|{params['prompt']}|{i}",
                                                                *_thumb(params["size"]))
            if kind == "bad_image":
                blob = b"not an image"
            image_id = str(uuid.uuid4())
            item = {"image_id": image_id}
            if as_url:
                name = f"{image_id}.{'svg' if blob is SVG else 'png'}"
                files[name] = blob
                item["url"] = f"{str(request.base_url).rstrip('/')}/files/{name}?sig=emulated"
            else:
                item["b64_json"] = "%%%" if kind == "bad_base64" else base64.b64encode(blob).decode()
            data.append(item)
        body = {"created": int(time.time()), "credits": price * n, "data": data}
        if kind == "no_credits":
            del body["credits"]
        if kind == "no_data":
            del body["data"]
        return JSONResponse(body)

    async def generate(request: Request) -> Response:
        raw = await request.body()
        requests.append(Recorded(method=request.method, path=request.url.path, headers=dict(request.headers),
                                 body=raw))
        fault = faults.take("generate")
        delay = fault.delay if fault is not None and fault.delay else float(state.get("delay", 0) or 0)
        if delay:
            await asyncio.sleep(delay)
        if not authorized(request):
            return PlainTextResponse("request unauthorized", status_code=401)
        if fault is not None and fault.status is not None:
            if isinstance(fault.body, (dict, list)):
                return JSONResponse(fault.body, status_code=fault.status, headers=fault.headers)
            if fault.body is not None:
                return Response(fault.body, status_code=fault.status, headers=fault.headers, media_type="text/plain")
            return default_error(fault.status, fault.headers)
        try:
            params = validate(raw)
        except RecraftError as err:
            return err.response()
        kind = fault.kind if fault is not None else ""
        if kind == "malformed":
            return Response("<html><body>502 Bad Gateway</body></html>", media_type="text/html")
        return success(request, params, kind)

    async def download(request: Request) -> Response:
        requests.append(Recorded(method="GET", path=request.url.path, headers=dict(request.headers), body=b""))
        fault = faults.take("download")
        if fault is not None and fault.status is not None:
            return PlainTextResponse("AccessDenied", status_code=fault.status)
        blob = files.get(request.path_params["name"])
        if blob is None:
            return PlainTextResponse("404 page not found", status_code=404)
        return Response(blob, media_type="image/svg+xml" if blob is SVG else "image/png")

    async def not_found(request: Request) -> Response:
        return PlainTextResponse("404 page not found", status_code=404)

    return Starlette(routes=[
        Route("/v1/images/generations", generate, methods=["POST"]),
        Route("/files/{name}", download, methods=["GET"]),
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "DELETE"]),
    ])


@contextlib.contextmanager
def emulator(*, api_key: str = API_KEY):
    """Serve the emulator on a free loopback port; yields base.Emulator (url, faults, requests, state)."""
    faults, requests, state = Faults(), [], {}
    with serve(build_app(faults=faults, requests=requests, state=state, api_key=api_key), faults=faults,
               requests=requests, state=state) as emu:
        yield emu


def recorded_json(recorded: Recorded) -> dict:
    return json.loads(recorded.body)
