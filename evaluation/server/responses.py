"""JSON replies that cannot fail to encode (a reply that raises while rendering is a 500)."""

from __future__ import annotations

from psc6k_web.responses import SafeJSONResponse  # noqa: F401  (one JSON reply for both apps)


def clean_text(value: str, limit: int | None = None) -> str:
    """Printable text for storage: no control characters, no lone surrogates (PostgreSQL and
    UTF-8 reject them), at most ``limit`` characters."""
    text = value.encode("utf-8", "replace").decode("utf-8")
    text = "".join(ch if ch >= " " or ch in "\t" else " " for ch in text).strip()
    return text[:limit] if limit else text
