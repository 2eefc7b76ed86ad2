"""/docs/api/: the API reference for humans, rendered on the server from the same OpenAPI schema as /v1/openapi.json.

The schema is generated once per process (drf-spectacular's SchemaGenerator, like the JSON view) and turned into
plain rows for the template: endpoints, fields with their allowed values, responses, headers, shapes, error codes
and code samples. Nothing here states a fact about the API that the schema does not.

This module is also the URLconf of /docs/api/ (config/urls.py includes it).
"""
import functools
import json
import re

from django.conf import settings
from django.shortcuts import render
from django.utils.html import escape
from django.utils.safestring import mark_safe
from drf_spectacular.generators import SchemaGenerator

from generation.api import openapi

_REF = "#/components/schemas/"


def api_schema() -> dict:
    """The /v1 OpenAPI schema, generated once per process and catalog (it depends only on code and the catalog,
    which can grow at runtime: self-hosted models register when the provider registry is built)."""
    return _schema_for(tuple(m.id for m in openapi.all_models()))


@functools.lru_cache(maxsize=2)
def _schema_for(model_ids: tuple[str, ...]) -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


_CODE = re.compile(r"`([^`]+)`")


def _text(value: str) -> str:
    """Schema prose (CommonMark's `code` spans only) as safe HTML."""
    text = _CODE.sub(r"<code>\1</code>", str(escape(value)))
    text = text.replace("this document&#x27;s <code>x-imagegate-models</code> table",
                        '<a href="#models">models table</a>')
    return mark_safe(text)


def _examples(content: dict) -> list[dict]:
    return [{"name": example.get("summary") or name, "json": json.dumps(example["value"], indent=2)}
            for name, example in content.get("examples", {}).items() if "value" in example]


def _ref_name(schema: dict) -> str | None:
    ref = schema.get("$ref", "")
    return ref[len(_REF):] if ref.startswith(_REF) else None


def _type_label(schema: dict) -> tuple[str, str | None]:
    """(text, name of the component it links to, if any)."""
    name = _ref_name(schema)
    if name:
        return name, name
    if schema.get("type") == "array":
        inner, link = _type_label(schema.get("items", {}))
        return f"array of {inner}", link
    if schema.get("format") == "binary":
        text = "file"
    else:
        text = schema.get("type", "any")
        if schema.get("format") in ("uri", "date-time", "byte"):
            text += f" ({schema['format']})"
    if schema.get("nullable"):
        text += " or null"
    return text, None


def _constraints(schema: dict) -> list[str]:
    out = []
    target = schema.get("items", {}) if schema.get("type") == "array" else {}
    for key, label in (("minLength", "min length"), ("maxLength", "max length"), ("minimum", "min"),
                       ("maximum", "max"), ("minItems", "min items"), ("maxItems", "max items"),
                       ("pattern", "pattern")):
        if key in schema:
            out.append(f"{label} {schema[key]}")
    if "default" in schema:
        out.append(f"default {schema['default']}")
    enum = [v for v in target.get("enum", []) if v is not None]
    if enum:
        out.append("items: " + ", ".join(map(str, enum)))
    return out


def _fields(schema: dict, components: dict) -> list[dict]:
    name = _ref_name(schema)
    if name:
        schema = components.get(name, {})
    required = set(schema.get("required", []))
    rows = []
    for field, spec in schema.get("properties", {}).items():
        text, link = _type_label(spec)
        rows.append({
            "name": field,
            "type": text,
            "link": link,
            "required": field in required,
            "enum": [v for v in spec.get("enum", []) if v is not None],
            "constraints": _constraints(spec),
            "description": _text(spec.get("description", "")),
        })
    return rows


def _one_of_required(schema: dict, components: dict) -> list[list[str]]:
    name = _ref_name(schema)
    if name:
        schema = components.get(name, {})
    return [alt.get("required", []) for alt in schema.get("anyOf", []) if alt.get("required")]


def _samples(operation: dict, base_url: str) -> list[dict]:
    return [{"label": s["label"], "lang": s["lang"], "source": s["source"].replace(openapi.EXAMPLE_BASE_URL, base_url)}
            for s in operation.get("x-codeSamples", [])]


def build_reference(schema: dict, base_url: str) -> dict:
    """The schema as rows the template can show without any logic of its own."""
    components = schema.get("components", {}).get("schemas", {})
    endpoints = []
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            request = None
            body = operation.get("requestBody")
            if body:
                media_type, content = next(iter(body["content"].items()))
                request = {"media_type": media_type, "required": body.get("required", False),
                           "fields": _fields(content["schema"], components),
                           "one_of_required": _one_of_required(content["schema"], components),
                           "examples": _examples(content)}
            responses = []
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                shape, examples = None, []
                if content:
                    first = next(iter(content.values()))
                    shape, examples = _ref_name(first["schema"]), _examples(first)
                headers = [{"name": name, "required": header.get("required", False),
                            "description": header.get("description", "")}
                           for name, header in response.get("headers", {}).items()]
                responses.append({"status": status, "description": _text(response.get("description", "")),
                                  "shape": shape, "headers": headers, "examples": examples})
            parameters = [{"name": p["name"], "in": p["in"], "required": p.get("required", False),
                           "type": _type_label(p.get("schema", {}))[0],
                           "constraints": _constraints(p.get("schema", {})),
                           "description": _text(p.get("description", ""))}
                          for p in operation.get("parameters", [])]
            endpoints.append({
                "id": operation.get("operationId", f"{method}-{path}"),
                "method": method.upper(),
                "path": path,
                "summary": operation.get("summary", ""),
                "description": _text(operation.get("description", "")),
                "tags": operation.get("tags", []),
                "auth": bool(operation.get("security")),
                "parameters": parameters,
                "request": request,
                "responses": responses,
                "samples": _samples(operation, base_url),
            })
    request_shapes = {_ref_name(c["schema"]) for item in schema.get("paths", {}).values() for op in item.values()
                      for c in op.get("requestBody", {}).get("content", {}).values()}
    shapes = [{"name": name, "description": _text(spec.get("description", "")), "fields": _fields(spec, components)}
              for name, spec in components.items() if name not in request_shapes]
    # Headers shared by the endpoints, described once.
    header_docs: dict[str, str] = {}
    for endpoint in endpoints:
        for response in endpoint["responses"]:
            for header in response["headers"]:
                header_docs.setdefault(header["name"], _text(header["description"]))
    return {
        "info": schema.get("info", {}),
        "description": _text(schema.get("info", {}).get("description", "")),
        "openapi": schema.get("openapi"),
        "security": schema.get("components", {}).get("securitySchemes", {}),
        "endpoints": endpoints,
        "shapes": shapes,
        "headers": sorted(header_docs.items()),
        "error_codes": [{**row, "description": _text(row["description"])}
                        for row in components.get("Error", {}).get("x-error-codes", [])],
        "models": [_model_row(m) for m in schema.get("x-imagegate-models", [])],
        "base_url": base_url,
    }


def _model_row(model: dict) -> dict:
    inputs = model.get("input_images")
    if inputs:
        inputs = (", ".join(t.split("/")[1].upper() for t in inputs["content_types"])
                  + f", ≤ {inputs['max_bytes'] // 1_048_576} MB" + (", square" if inputs["square"] else "")
                  + (f", up to {inputs['max_images']} images" if inputs["max_images"] > 1 else ""))
    return {**model, "inputs": inputs,
            "extras": [f"{name}: {', '.join(model[name])}" for name in ("backgrounds", "output_formats")
                       if model.get(name)]}


def api_reference(request):
    base_url = (settings.PUBLIC_BASE_URL or request.build_absolute_uri("/")).rstrip("/")
    return render(request, "api_reference.html", {"ref": build_reference(api_schema(), base_url)})

