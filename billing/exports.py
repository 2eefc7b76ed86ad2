"""CSV exports that stream, and that are safe to open in a spreadsheet.

A value a customer controls (a model name, an error code, a key's name) can start with `=`, `+`, `-`, `@`, a tab or a
carriage return, which Excel, LibreOffice and Google Sheets run as a formula ("CSV injection": OWASP's CSV Injection
page). Every text cell that starts with one of them gets a leading apostrophe, which spreadsheets show as text and do
not display; numbers are written as numbers. Used by the customer's request log export and the staff ledger export.
"""
import csv

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value):
    """`value`, with text that a spreadsheet would treat as a formula made inert; other values unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class _Echo:
    """A file-like object whose write returns what it was given: csv.writer formats, the response streams."""

    def write(self, value):
        return value


def csv_lines(header: list[str], rows):
    """The CSV text of `header` and `rows` (iterables of cells), one line at a time, every cell made safe."""
    writer = csv.writer(_Echo())
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow([safe_cell(cell) for cell in row])
