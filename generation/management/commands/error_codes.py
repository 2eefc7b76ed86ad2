"""`manage.py error_codes`: the API's error codes as a Markdown table, from the registry (generation/errors.py).

docs/errors.md is this command's output (`manage.py error_codes > docs/errors.md`); tests/test_architecture.py fails
when the two differ, so the documented table cannot drift from the codes the API raises.
"""
from django.core.management.base import BaseCommand

from generation import errors


def markdown() -> str:
    """docs/errors.md's text: a heading, how to read it, one row per registered code."""
    lines = [
        "# Error codes",
        "",
        "Every error the API answers with, in OpenAI's envelope",
        '`{"error": {"message", "type", "param", "code"}}`. Generated from the registry in `generation/errors.py`',
        "by `python manage.py error_codes > docs/errors.md`; a test fails when this file and the registry differ.",
        "The same table is in the OpenAPI description (`x-error-codes` on the `Error` schema) and on the reference",
        "page (/docs/api/).",
        "",
        "| HTTP | `type` | `code` | When |",
        "| --- | --- | --- | --- |",
    ]
    for row in errors.REGISTRY:
        code = f"`{row.code}`" if row.code else "null"
        when = row.when.replace("|", "\\|")
        lines.append(f"| {row.status} | `{row.type}` | {code} | {when} |")
    return "\n".join(lines) + "\n"


class Command(BaseCommand):
    help = "Print the API's error codes as Markdown (docs/errors.md), from generation/errors.py's registry."

    def handle(self, *args, **options):
        self.stdout.write(markdown(), ending="")
