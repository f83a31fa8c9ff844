"""Downloads of the dashboard: raw clicks and the aggregated ground truth (admin token)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from psc6k_web.deps import AdminAuth
from psc6k_web.errors import error_responses

from ..deps import Service
from ..service.exports import ExportFile

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[AdminAuth],
                   responses=error_responses(401, 403, 429))


def download(f: ExportFile) -> Response:
    return Response(f.content, media_type=f.media_type,
                    headers={"Content-Disposition": f'attachment; filename="{f.filename}"'})


@router.get("/clicks", response_class=Response,
            responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}})
def export_clicks(service: Service, format: Literal["csv", "jsonl"] = "csv",
                  include: Literal["counted", "all"] = "counted"):
    """Raw clicks: psc6k.formats.CLICK_COLUMNS (participant = salted pseudonym) + display;
    ``include=all`` adds catch-trial and flagged clicks with columns kind, excluded."""
    return download(service.exports.clicks_file(format, include_all=(include == "all")))


@router.get("/export", response_class=Response,
            responses={200: {"content": {"application/zip": {}, "text/csv": {}, "application/json": {}}}})
def export(service: Service, format: Literal["psc6k", "ps", "st", "coco"] = "psc6k",
           n_sigma: Annotated[float, Query(gt=0, le=100)] = 3.0):
    """Aggregated ground truth (3-sigma rule): ``psc6k`` a zip of test_pairs_ps.csv,
    test_pairs_st.csv and aggregate_report.json; ``ps`` / ``st`` one CSV; ``coco`` JSON."""
    return download(service.exports.ground_truth_file(format, n_sigma))
