"""The participant page, the dashboard and their static files."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from psc6k.errors import NotFoundError

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

router = APIRouter(include_in_schema=False)


def page(name: str) -> FileResponse:
    path = STATIC_DIR / name
    if not path.is_file():
        raise NotFoundError(f"{name} is not installed (annotation_app/static/{name})")
    return FileResponse(path, headers={"Cache-Control": "no-cache"})


def image_response(path: Path) -> FileResponse:
    return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})


@router.get("/")
def index():
    return page("index.html")


@router.get("/admin")
def admin_page():
    return page("admin.html")
