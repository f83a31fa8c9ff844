"""The one rule for free text that reaches a database, a file or a page.

A free string (a method name, a Prolific id, a token name, an id in a URL path ...) is refused
when it holds a character that cannot be shown as what it is:

* NUL and the other C0 controls (U+0000-U+001F) and DEL (U+007F): PostgreSQL refuses NUL in
  text, terminals and CSV readers act on the others;
* C1 controls (U+0080-U+009F);
* Unicode format characters (category ``Cf``): bidi overrides and isolates (U+202A-U+202E,
  U+2066-U+2069) that make one name render as another, zero-width characters (U+200B-U+200F,
  U+2060, U+FEFF) that make two names look equal, soft hyphen, ...;
* lone surrogates (category ``Cs``): not encodable as UTF-8;
* the line and paragraph separators U+2028 / U+2029.

Tab is allowed only where a caller says so (free descriptions). The rule is pure (no web
import) so that CSV and report code can apply it too; the web services wrap it in a pydantic
type for their request fields.
"""

from __future__ import annotations

import unicodedata

from .errors import Psc6kError

#: Categories refused: controls, format characters, surrogates, and the line / paragraph
#: separators U+2028 / U+2029 (a line break inside a one-line name). Private-use and unassigned
#: code points pass (they render as themselves, or as a box).
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def forbidden_char(text: str, *, allow_tab: bool = False) -> tuple[int, str] | None:
    """The first character of ``text`` the rule refuses, as ``(index, "U+XXXX")``, or None.

    Examples
    --------
    >>> forbidden_char("PSCNet (ResNet-18)") is None
    True
    >>> forbidden_char("evil\\u202eteN")
    (4, 'U+202E')
    >>> forbidden_char("a\\x00b")
    (1, 'U+0000')
    >>> forbidden_char("a\\tb"), forbidden_char("a\\tb", allow_tab=True)
    ((1, 'U+0009'), None)
    """
    for i, ch in enumerate(text):
        if ch.isprintable():  # fast path: no printable character is in a refused category
            continue
        if ch == " " or (allow_tab and ch == "\t"):
            continue
        if unicodedata.category(ch) in REFUSED_CATEGORIES:
            return i, f"U+{ord(ch):04X}"
    return None


def check_text(text: str, field: str, *, allow_tab: bool = False) -> str:
    """``text`` unchanged, or :class:`Psc6kError` naming ``field``, the character and where.

    Examples
    --------
    >>> check_text("ok", "method")
    'ok'
    >>> check_text("x\\u200by", "method")
    Traceback (most recent call last):
    ...
    psc6k.errors.Psc6kError: method: character U+200B at position 1 is not allowed (control or invisible formatting characters)
    """
    bad = forbidden_char(text, allow_tab=allow_tab)
    if bad is not None:
        raise Psc6kError(f"{field}: {text_problem(*bad)}")
    return text


def text_problem(index: int, code: str) -> str:
    """What is wrong with a refused character (one wording for every caller)."""
    return f"character {code} at position {index} is not allowed (control or invisible formatting characters)"
