"""The PSC6K scoring and leaderboard server (``psc6k serve``).

``create_app(settings)`` builds the FastAPI application. Scoring goes through exactly the code of
``psc6k eval``: :func:`psc6k.submission.load_submission` then :func:`psc6k.pck.evaluate`; this
package only adds the HTTP layer around it (bounded body reading, decompression caps, auth,
quotas, storage). Importing this package is cheap; FastAPI is imported by :mod:`.app`.
"""

from __future__ import annotations

__all__ = ["create_app", "ServerSettings"]


def __getattr__(name):  # lazy: ``psc6k serve --help`` must not import FastAPI
    if name == "create_app":
        from .app import create_app
        return create_app
    if name == "ServerSettings":
        from .settings import ServerSettings
        return ServerSettings
    raise AttributeError(name)
