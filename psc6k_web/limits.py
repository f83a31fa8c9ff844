"""What the HTTP server of both web services bounds before the app runs (``ServerLimits``), and
the flags that set it in ``psc6k serve`` and ``psc6k annotate serve``. Kept apart from
``psc6k_web.server`` so that building a command's parser does not import uvicorn."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from psc6k.errors import Psc6kError

KIB = 1024


class ServerLimits(BaseModel):
    """What the HTTP server bounds before the application sees a request (per worker process).

    Attributes
    ----------
    max_head_bytes : int
        Largest request line + headers, bytes (431 and close beyond; nothing past it is read).
    head_timeout_s : float
        Seconds the request line + headers may take to arrive (408 and close beyond).
    max_connections : int
        Open connections per worker (beyond: 503 and close at once).
    max_connections_per_client : int
        Open connections per worker from one client address (beyond: 503 and close at once).
    keep_alive_s : float
        Seconds an idle kept-alive connection stays open.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_head_bytes: int = Field(64 * KIB, ge=1 * KIB, le=16 * 1024 * KIB)
    head_timeout_s: float = Field(10.0, gt=0, le=3600)
    max_connections: int = Field(4096, ge=1)
    max_connections_per_client: int = Field(64, ge=1)
    keep_alive_s: float = Field(5.0, gt=0, le=3600)


# -- the flags of both commands (``psc6k serve``, ``psc6k annotate serve``) ------------------------
_FLAGS = {  # field -> (flag, metavar, unit factor from flag to field, help)
    "max_head_bytes": ("--max-head-kb", "KIB", KIB, "largest request line + headers (431 and close beyond)"),
    "head_timeout_s": ("--head-timeout", "S", 1, "seconds the request line + headers may take (408 and close beyond)"),
    "max_connections": ("--max-connections", "N", 1, "open connections per worker (503 and close beyond)"),
    "max_connections_per_client": ("--max-connections-per-client", "N", 1,
                                   "open connections per worker from one client address (503 and close beyond)"),
    "keep_alive_s": ("--keep-alive", "S", 1, "seconds an idle kept-alive connection stays open"),
}


def add_limit_arguments(parser) -> None:
    """Add the ``ServerLimits`` flags (defaults from the model) to an argparse parser."""
    group = parser.add_argument_group("HTTP server bounds (per worker; see docs/server.md)")
    for field, (flag, metavar, factor, text) in _FLAGS.items():
        default = ServerLimits.model_fields[field].default
        group.add_argument(flag, dest=f"limit_{field}", metavar=metavar, type=type(default),
                           default=type(default)(default / factor), help=f"{text} (default: %(default)s)")


def limits_from_args(args) -> ServerLimits:
    """``ServerLimits`` from the flags of ``add_limit_arguments``; a bad value is one line naming its flag."""
    values = {field: getattr(args, f"limit_{field}") * factor for field, (_, _, factor, _) in _FLAGS.items()}
    try:
        return ServerLimits(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        flag, _, factor, _ = _FLAGS[err["loc"][0]]
        bounds = {k: v / factor for k, v in err.get("ctx", {}).items() if isinstance(v, (int, float))}
        message = err["msg"] if factor == 1 or not bounds else \
            "must be " + " and ".join(f"{_WORDS[k]} {v:g}" for k, v in bounds.items())
        raise Psc6kError(f"{flag}: {message}") from None


_WORDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
