"""FastAPI application of the annotation service. The contract is in docs/annotation.md (and at
``/docs`` / ``/openapi.json`` of a running server)."""

from __future__ import annotations

import hmac
import io
import json
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path as FilePath
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from psc6k.errors import Psc6kError
from psc6k.formats import COORD_MAX, COORD_MIN

from .service import ApiError, StudyService

log = logging.getLogger("psc6k.annotate")
STATIC_DIR = FilePath(__file__).parent / "static"
MAX_BODY_BYTES = 64 * 1024
MAX_DISPLAY_CHARS = 4096
TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]{8,64}$")
MAX_ID = 2**31 - 1  # database INTEGER ids: larger numbers are 422, never an overflow 500
Id = Annotated[int, Path(ge=0, le=MAX_ID)]
Which = Literal["sketch", "photo"]


# ---------------------------------------------------------------------------- request bodies
class SessionStart(BaseModel):
    """Prolific's URL parameters PROLIFIC_PID, STUDY_ID, SESSION_ID."""

    model_config = ConfigDict(extra="ignore")
    prolific_pid: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-.]+$",
                              description="PROLIFIC_PID (letters, digits, _ - .)")
    study_id: str = Field("", max_length=128, description="Prolific STUDY_ID")
    session_id: str = Field("", max_length=128, description="Prolific SESSION_ID")


class ClickIn(BaseModel):
    """One click; x, y in photo pixels (x = column, y = row, pixel centres at integers)."""

    model_config = ConfigDict(extra="ignore")
    trial_id: StrictInt = Field(ge=1, le=MAX_ID)
    x: float = Field(ge=COORD_MIN, le=COORD_MAX, allow_inf_nan=False)
    y: float = Field(ge=COORD_MIN, le=COORD_MAX, allow_inf_nan=False)
    rt_ms: float | None = Field(None, ge=0, le=24 * 3600 * 1000, allow_inf_nan=False)
    client_id: str = Field(min_length=1, max_length=128, description="idempotency key, one per click")
    display: dict | None = Field(None, description="displayed size, devicePixelRatio, blur/focus counts, ...")

    @field_validator("x", "y", "rt_ms", mode="before")
    @classmethod
    def _number_not_bool(cls, v):
        if isinstance(v, (bool, str)):
            raise ValueError("must be a JSON number")
        return v

    @field_validator("display")
    @classmethod
    def _small_display(cls, v):
        if v is not None and len(json.dumps(v)) > MAX_DISPLAY_CHARS:
            raise ValueError(f"must be at most {MAX_DISPLAY_CHARS} characters of JSON")
        return v


# ---------------------------------------------------------------------------- middleware
class BodySizeLimit:
    """Reject request bodies over ``limit`` bytes with 413 (declared or streamed)."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = JSONResponse({"detail": f"request body larger than {self.limit} bytes"}, status_code=413)
        if declared is not None:
            try:
                if int(declared) > self.limit:
                    return await too_big(scope, receive, send)
            except ValueError:
                return await JSONResponse({"detail": "bad Content-Length header"}, status_code=400)(scope, receive, send)
            return await self.app(scope, receive, send)
        # no Content-Length (chunked): read it all here, up to the limit, then replay it
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await too_big(scope, receive, send)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _field_of(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def _image_response(path: FilePath) -> FileResponse:
    return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})


# ---------------------------------------------------------------------------- the app
def create_app(db_url: str | None = None, *, service: StudyService | None = None,
               admin_token: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               image_root=None) -> FastAPI:
    """Build the app for the study in ``db_url`` (or around an existing ``service``).

    ``admin_token`` defaults to the environment variable ``PSC6K_ADMIN_TOKEN``; without one the
    admin API answers 503.
    """
    if service is None:
        if db_url is None:
            raise Psc6kError("create_app needs a database URL")
        service = StudyService(db_url, image_root=image_root)
    if admin_token is None:
        admin_token = os.environ.get("PSC6K_ADMIN_TOKEN") or None

    app = FastAPI(title="PSC6K annotation service", version="1",
                  description="Crowd annotation of PSC6K keypoints. Contract: docs/annotation.md.")
    app.state.service = service
    app.state.internal_errors = 0
    app.add_middleware(BodySizeLimit, limit=max_body_bytes)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"detail": exc.detail, **exc.extra}, status_code=exc.status)

    @app.exception_handler(Psc6kError)
    async def _user_error(request: Request, exc: Psc6kError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = [{"field": _field_of(e.get("loc", ())), "message": e.get("msg", "invalid")} for e in exc.errors()]
        text = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return JSONResponse({"detail": f"invalid request: {text}", "errors": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):  # only true bugs land here
        app.state.internal_errors += 1
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error (logged)"}, status_code=500)

    def svc() -> StudyService:
        return app.state.service

    def check_token(token: str) -> str:
        if not TOKEN_RE.match(token):
            raise ApiError(404, "unknown session token (start again from the study link)", field="token")
        return token

    # -------------------------------------------------------------- pages
    def page(name: str):
        path = STATIC_DIR / name
        if not path.is_file():
            raise ApiError(404, f"{name} is not installed (annotation_app/static/{name})")
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def index():
        return page("index.html")

    @app.get("/admin", include_in_schema=False)
    def admin_page():
        return page("admin.html")

    STATIC_DIR.mkdir(exist_ok=True)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # -------------------------------------------------------------- participant API
    @app.get("/api/study", tags=["participant"])
    def get_study():
        """Title, consent and instruction texts, and practice trials with known answers."""
        return svc().study_info()

    @app.get("/api/study/practice/{practice_id}/{which}", tags=["participant"])
    def practice_image(practice_id: Id, which: Which):
        return _image_response(svc().practice_image(practice_id, which))

    @app.post("/api/sessions", tags=["participant"])
    def start_session(body: SessionStart):
        """Start a session, or resume the one this PROLIFIC_PID already has (never a second plan).
        201 when created, 200 when resumed; 409 ``reason: study_full`` when no slot is open."""
        data, created = svc().start_session(body.prolific_pid, body.study_id, body.session_id)
        return JSONResponse(data, status_code=201 if created else 200)

    # The hot routes are ``async`` and call the service inline: a click is ~1 ms of database work,
    # less than the cost of handing it to the thread pool (which FastAPI does for plain ``def``).
    @app.get("/api/sessions/{token}", tags=["participant"])
    async def get_session(token: str):
        """The same body as POST /api/sessions (resume after a reload)."""
        return svc().session_body(check_token(token))

    @app.post("/api/sessions/{token}/clicks", tags=["participant"], status_code=201)
    async def post_click(token: str, body: ClickIn):
        """Store one click, durably, before answering. Same client_id again: the same body
        (200). Another click on an answered trial: 409. Lapsed lease: 410."""
        status, data = svc().record_click(check_token(token), body.trial_id, body.x, body.y, body.rt_ms,
                                          body.client_id, body.display)
        return JSONResponse(data, status_code=status)

    @app.post("/api/sessions/{token}/complete", tags=["participant"])
    async def complete(token: str):
        """Completion code and redirect URL, only once the server holds every trial."""
        return svc().complete(check_token(token))

    @app.get("/api/sessions/{token}/images/{trial_id}/{which}", tags=["participant"])
    def trial_image(token: str, trial_id: Id, which: Which):
        return _image_response(svc().trial_image(check_token(token), trial_id, which))

    # -------------------------------------------------------------- admin API
    def require_admin(request: Request):
        if not admin_token:
            raise ApiError(503, "the admin API is disabled: set PSC6K_ADMIN_TOKEN before starting the server")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), admin_token.encode()):
            raise ApiError(401, "admin routes need the header 'Authorization: Bearer <PSC6K_ADMIN_TOKEN>'")

    admin = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(require_admin)])

    @admin.get("/progress")
    def progress():
        return svc().progress()

    @admin.get("/live")
    def live(task_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None):
        return svc().live(task_id)

    @admin.get("/participants")
    def participants():
        return {"participants": svc().participants()}

    @admin.get("/images/{task_id}/{which}")
    def admin_image(task_id: Id, which: Which):
        return _image_response(svc().task_image(task_id, which))

    @admin.get("/clicks")
    def export_clicks(format: Literal["csv", "jsonl"] = "csv", include: Literal["counted", "all"] = "counted"):
        """Raw clicks: psc6k.formats.CLICK_COLUMNS (participant = salted pseudonym) + display;
        ``include=all`` adds catch-trial and flagged clicks with columns kind, excluded."""
        from psc6k.formats import clicks_to_csv_text

        frame = svc().clicks_frame(include_all=(include == "all"))
        if format == "csv":
            return PlainTextResponse(clicks_to_csv_text(frame), media_type="text/csv",
                                     headers={"Content-Disposition": 'attachment; filename="clicks.csv"'})
        lines = []
        for rec in frame.to_dict(orient="records"):
            rec["display"] = json.loads(rec["display"]) if rec["display"] else None
            lines.append(json.dumps(rec))
        return PlainTextResponse("".join(line + "\n" for line in lines), media_type="application/x-ndjson",
                                 headers={"Content-Disposition": 'attachment; filename="clicks.jsonl"'})

    @admin.get("/export")
    def export(format: Literal["psc6k", "ps", "st", "coco"] = "psc6k",
               n_sigma: Annotated[float, Query(gt=0, le=100)] = 3.0):
        """Aggregated ground truth (3-sigma rule): ``psc6k`` a zip of test_pairs_ps.csv,
        test_pairs_st.csv and aggregate_report.json; ``ps`` / ``st`` one CSV; ``coco`` JSON."""
        from psc6k.formats import write_test_pairs_ps, write_test_pairs_st

        from .export import to_coco

        ann, _, report = svc().aggregate(n_sigma)
        if format == "coco":
            return JSONResponse(to_coco(ann, report))
        with tempfile.TemporaryDirectory() as tmp:
            ps, st = FilePath(tmp) / "test_pairs_ps.csv", FilePath(tmp) / "test_pairs_st.csv"
            write_test_pairs_ps(ann, ps)
            write_test_pairs_st(ann, st)
            if format in ("ps", "st"):
                text = (ps if format == "ps" else st).read_text(encoding="utf-8")
                return PlainTextResponse(text, media_type="text/csv", headers={
                    "Content-Disposition": f'attachment; filename="test_pairs_{format}.csv"'})
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                zf.write(ps, "test_pairs_ps.csv")
                zf.write(st, "test_pairs_st.csv")
                zf.writestr("aggregate_report.json", json.dumps(report, indent=2))
        return Response(buf.getvalue(), media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="psc6k_annotations.zip"'})

    app.include_router(admin)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (each worker builds its own): reads PSC6K_ANNOT_DB,
    PSC6K_ANNOT_IMAGES (optional) and PSC6K_ADMIN_TOKEN."""
    url = os.environ.get("PSC6K_ANNOT_DB")
    if not url:
        raise Psc6kError("set PSC6K_ANNOT_DB to the study database URL")
    return create_app(url, image_root=os.environ.get("PSC6K_ANNOT_IMAGES") or None)
