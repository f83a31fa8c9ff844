"""The one lifespan shape of both apps: open what the app needs at start-up, close it at shutdown."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI

#: ``open(app)`` puts what requests need on ``app.state`` and returns the function that closes it
#: (or None when there is nothing to close).
Opener = Callable[[FastAPI], "Callable[[], None] | None"]


def lifespan(open_: Opener):
    """A FastAPI ``lifespan=`` that runs ``open_(app)`` at start-up and its closer at shutdown
    (also when a request or the server failed)."""

    @asynccontextmanager
    async def _lifespan(app: FastAPI):
        close = open_(app)
        try:
            yield
        finally:
            if close is not None:
                close()

    return _lifespan
