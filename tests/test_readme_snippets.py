"""The README's Python snippets, and the API reference's Python samples (generation/api/openapi.py), run as written
against a live test server: only the base URL (http://127.0.0.1:8000 in the README, the reference's example host)
is pointed at it and IMAGEGATE_API_KEY is set. They must work with the pinned SDK, and what they print as the cost
must be the ledger's (issue 13: `result.model_extra["usage"]` raised KeyError)."""
import contextlib
import io
import re
from pathlib import Path

from PIL import Image

from billing.models import LedgerEntry
from generation.api import openapi

README = Path(__file__).resolve().parent.parent / "README.md"
README_BASE = "http://127.0.0.1:8000"


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.S | re.M)


def _inputs(directory: Path) -> None:
    """in.png and mask.png, as the edit and variation snippets open them."""
    Image.new("RGBA", (256, 256), (200, 40, 40, 255)).save(directory / "in.png")
    mask = Image.new("RGBA", (256, 256), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (64, 64, 192, 192))
    mask.save(directory / "mask.png")


def _run(code: str, namespace: dict) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<snippet>", "exec"), namespace)  # noqa: S102 (our own documentation, on purpose)
    return out.getvalue()


def test_the_readme_has_python_snippets_that_read_the_cost_with_the_sdk():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2
    assert any('result.usage.model_extra["cost"]' in b for b in blocks)
    assert not any('model_extra["usage"]' in b for b in blocks)


def test_the_readme_snippets_run_against_a_live_server(live_url, api_key, tmp_path, monkeypatch):
    _, raw = api_key
    monkeypatch.setenv("IMAGEGATE_API_KEY", raw)
    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    namespace: dict = {}
    printed = "".join(_run(block.replace(README_BASE, live_url), namespace)
                      for block in python_blocks(README.read_text()))

    assert (tmp_path / "lighthouse.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(LedgerEntry.objects.for_organization(api_key[0].organization).order_by("id"))
    # generate, edit, variation, a streamed generation, a generation under max_cost (the quote charges nothing)
    assert [r.endpoint for r in rows] == ["generations", "edits", "variations", "generations", "generations"]
    assert all(r.status == "succeeded" for r in rows)
    lines = printed.splitlines()
    assert float(lines[0]) == rows[0].cost_micros / 1e6 == 0.001  # the cost, read as the README says
    assert lines[1] == "local-preview" and lines[2] == "0"
    assert lines[-2] == str(rows[3].cost_micros / 1e6)  # the streamed completed event's usage.cost
    cost, version = lines[-1].split()
    assert float(cost) == 4 * rows[0].cost_micros / 1e6 and version.endswith("Z")  # the quote for n=4


def test_the_api_references_python_samples_run_against_a_live_server(live_url, api_key, tmp_path, monkeypatch):
    _, raw = api_key
    monkeypatch.setenv("IMAGEGATE_API_KEY", raw)
    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    Image.open(tmp_path / "in.png").save(tmp_path / "photo.png")
    printed = {}
    for endpoint in ("generations", "edits", "variations"):
        (sample,) = [s["source"] for s in openapi._samples(endpoint) if s["lang"] == "Python"]
        printed[endpoint] = _run(sample.replace(openapi.EXAMPLE_BASE_URL, live_url), {})
    rows = list(LedgerEntry.objects.for_organization(api_key[0].organization).order_by("id"))
    assert [(r.endpoint, r.status) for r in rows] == [("generations", "succeeded"), ("edits", "succeeded"),
                                                     ("variations", "succeeded")]
    cost, tokens = printed["generations"].splitlines()
    assert float(cost) == rows[0].cost_micros / 1e6 and tokens == "0"
    assert printed["edits"].startswith(live_url)
