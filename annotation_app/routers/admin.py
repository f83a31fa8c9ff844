"""The dashboard's API (``Authorization: Bearer <PSC6K_ADMIN_TOKEN>``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from psc6k_web.deps import AdminAuth
from psc6k_web.errors import error_responses

from ..deps import Service
from ..models import MAX_ID, Id, LiveView, Participants, Progress, StudyLink, Which
from .pages import image_response

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[AdminAuth],
                   responses=error_responses(401, 403, 429))


@router.get("/progress", response_model=Progress)
def progress(service: Service):
    return service.stats.progress()


@router.get("/study", response_model=StudyLink)
def study_link(service: Service):
    """The study URL to paste into Prolific (with its link key) and the entry windows."""
    return service.stats.study_link()


@router.get("/live", response_model=LiveView, response_model_exclude_unset=True, responses=error_responses(404))
def live(service: Service, task_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None):
    return service.stats.live(task_id)


@router.get("/participants", response_model=Participants)
def participants(service: Service):
    return {"participants": service.stats.participants()}


@router.get("/images/{task_id}/{which}", responses=error_responses(404))
def admin_image(task_id: Id, which: Which, service: Service):
    return image_response(service.info.task_image(task_id, which))
