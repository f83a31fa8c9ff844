"""The one text rule of :mod:`psc6k.text` as pydantic types, for every free string a request
carries (body fields, query and path parameters): a refused character is a 422 naming the field.

Use :data:`SafeText` for names and ids, :data:`SafeLongText` for free descriptions (tab allowed).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from psc6k.text import forbidden_char, text_problem


def _refuse(value: str, allow_tab: bool = False) -> str:
    bad = forbidden_char(value, allow_tab=allow_tab)
    if bad is not None:
        raise ValueError(text_problem(*bad))
    return value


def _refuse_but_tab(value: str) -> str:
    return _refuse(value, allow_tab=True)


#: A free string without NUL, C0/C1 controls, Unicode format characters (bidi, zero-width),
#: surrogates or line separators.
SafeText = Annotated[str, AfterValidator(_refuse)]
#: The same rule with tab allowed (multi-word free text such as a description).
SafeLongText = Annotated[str, AfterValidator(_refuse_but_tab)]
