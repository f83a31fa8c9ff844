"""JSON replies that cannot fail to encode (a reply that raises while rendering is a 500)."""

from __future__ import annotations

import json

from fastapi.responses import JSONResponse


def clean_text(value: str, limit: int | None = None) -> str:
    """Printable text for storage: no control characters, no lone surrogates (PostgreSQL and
    UTF-8 reject them), at most ``limit`` characters."""
    text = value.encode("utf-8", "replace").decode("utf-8")
    text = "".join(ch if ch >= " " or ch in "\t" else " " for ch in text).strip()
    return text[:limit] if limit else text


class SafeJSONResponse(JSONResponse):
    """ASCII-escaped JSON (lone surrogates from user strings encode as ``\\udXXX``), and
    non-finite floats as ``null`` instead of an exception."""

    def render(self, content) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        except ValueError:
            from psc6k.jsonsafe import json_safe
            text = json.dumps(json_safe(content), ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        return text.encode("ascii")
