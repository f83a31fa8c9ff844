"""JSON replies that cannot fail to encode (a reply that raises while rendering is a 500)."""

from __future__ import annotations

import json

from fastapi.responses import JSONResponse

from psc6k.jsonsafe import json_safe


class SafeJSONResponse(JSONResponse):
    """ASCII-escaped JSON (lone surrogates from user strings encode as ``\\udXXX``), and
    non-finite floats as ``null`` instead of an exception."""

    def render(self, content) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        except ValueError:
            text = json.dumps(json_safe(content), ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        return text.encode("ascii")
