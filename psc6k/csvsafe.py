"""CSV cells that a spreadsheet will not execute (CSV / formula injection).

OWASP's rule: a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is
read as a formula by Excel, LibreOffice and Google Sheets (``=cmd|' /C calc'!A0``); prefixing
it with a single quote makes it text. Every CSV psc6k writes passes its cells through
:func:`safe_cell`. Numbers are data, not formulas, and stay byte for byte: ``-0.5`` and the
``;``-joined keypoint lists of the PSC6K CSVs (``-0.5;12.0;...``) are left alone, so legitimate
files are unchanged.

>>> safe_cell("=cmd|' /C calc'!A0")
"'=cmd|' /C calc'!A0"
>>> safe_cell("-0.5"), safe_cell("-0.5;1.25"), safe_cell(-3), safe_cell("airplane/n0_1.jpg")
('-0.5', '-0.5;1.25', -3, 'airplane/n0_1.jpg')
"""

from __future__ import annotations

#: First characters that make a spreadsheet evaluate a cell (OWASP CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _is_number_list(text: str) -> bool:
    """True for a number or ``;``-joined numbers (``-0.5``, ``1e-3;-2``): data, never a formula."""
    try:
        for part in text.split(";"):
            float(part)
    except ValueError:
        return False
    return True


def safe_cell(value):
    """``value`` unchanged unless it is text a spreadsheet would execute; then ``"'" + value``.

    Non-strings (numbers, None) are returned as they are; a carriage return inside text becomes
    a newline (which the csv module quotes).
    """
    if not isinstance(value, str):
        return value
    if value.startswith(FORMULA_STARTS) and not _is_number_list(value):
        value = "'" + value
    if "\r" in value:
        # csv.writer with "\n" line endings does not quote a bare CR, which every reader takes as
        # a row break; as "\n" the cell is quoted and stays one cell.
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    return value


def safe_row(row) -> list:
    """:func:`safe_cell` of every cell of one row."""
    return [safe_cell(v) for v in row]


def safe_frame(df):
    """A copy of a pandas DataFrame with every text cell, column name and index label made safe."""
    out = df.copy()
    for col in out.columns:
        if getattr(out[col].dtype, "kind", "O") not in "iufcbmM":  # text (object or string dtype)
            out[col] = out[col].map(safe_cell)
    out.columns = [safe_cell(c) for c in out.columns]
    if getattr(out.index.dtype, "kind", "O") not in "iufcbmM":
        out.index = [safe_cell(i) for i in out.index]
    return out
