"""Pydantic models of every request and response body of the annotation service (the
contract of docs/annotation.md; ``/openapi.json`` is generated from them)."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from psc6k.formats import COORD_MAX, COORD_MIN
from psc6k_web.text import SafeText

MAX_DISPLAY_CHARS = 4096
MAX_ID = 2**31 - 1  # database INTEGER ids: larger numbers are 422, never an overflow 500
Id = Annotated[int, Path(ge=0, le=MAX_ID)]
Which = Literal["sketch", "photo"]
Point = list[float]


# ---------------------------------------------------------------------------- requests
class SessionStart(BaseModel):
    """Prolific's URL parameters PROLIFIC_PID, STUDY_ID, SESSION_ID, and the study link's key."""

    model_config = ConfigDict(extra="ignore")
    prolific_pid: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-.]+$",
                              description="PROLIFIC_PID (letters, digits, _ - .)")
    study_id: SafeText = Field("", max_length=128, description="Prolific STUDY_ID")
    session_id: SafeText = Field("", max_length=128, description="Prolific SESSION_ID")
    link_key: SafeText | None = Field(None, max_length=64, description="the key= parameter of the study link")


class ClickIn(BaseModel):
    """One click; x, y in photo pixels (x = column, y = row, pixel centres at integers)."""

    model_config = ConfigDict(extra="ignore")
    trial_id: StrictInt = Field(ge=1, le=MAX_ID)
    x: float = Field(ge=COORD_MIN, le=COORD_MAX, allow_inf_nan=False)
    y: float = Field(ge=COORD_MIN, le=COORD_MAX, allow_inf_nan=False)
    rt_ms: float | None = Field(None, ge=0, le=24 * 3600 * 1000, allow_inf_nan=False)
    client_id: SafeText = Field(min_length=1, max_length=128, description="idempotency key, one per click")
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


# ---------------------------------------------------------------------------- participant replies
class Practice(BaseModel):
    practice_id: int
    sketch_url: str
    photo_url: str
    sketch_keypoint: Point
    answer: Point | None
    tolerance_px: float | None


class StudyOut(BaseModel):
    title: str
    consent_text: str
    instructions_text: str
    trials_per_participant: int
    image_size: int
    lease_minutes: float
    practice: list[Practice]


class Trial(BaseModel):
    trial_id: int
    index: int
    category: str
    keypoint: int
    sketch_url: str
    photo_url: str
    sketch_keypoint: Point
    answered: bool


class SessionOut(BaseModel):
    session_token: str
    participant: str = Field(description="salted pseudonym of the Prolific id")
    status: Literal["active", "completed", "expired"]
    trials: list[Trial]
    next_index: int
    answered_count: int
    total: int
    expires_at: str
    lease_seconds_left: float


class ClickStored(BaseModel):
    trial_id: int
    stored: Literal[True]
    next_index: int
    answered_count: int
    total: int


class Completion(BaseModel):
    completion_code: str
    redirect_url: str


class Health(BaseModel):
    status: Literal["ok"]
    sessions: int


# ---------------------------------------------------------------------------- admin replies
class SessionCounts(BaseModel):
    started: int
    completed: int
    expired: int
    active: int
    flagged: int
    too_fast: int = Field(description="sessions whose median server-side response time is under the study's "
                                      "min_median_response_ms")
    resume_refused: int = Field(description="refused attempts to resume a Prolific ID from another SESSION_ID")


class SlotCounts(BaseModel):
    filled: int
    total: int


class CategoryProgress(SlotCounts):
    category: str


class Progress(BaseModel):
    sessions: SessionCounts
    slots: SlotCounts
    per_category: list[CategoryProgress]
    clicks_per_keypoint: dict[str, int] = Field(description="k -> how many keypoints have k counted clicks")
    median_trial_ms: float | None
    dropout_rate: float | None


class StudyLink(BaseModel):
    link_key: str | None = Field(description="the study link's key (null: a study made before keys existed)")
    study_url_path: str = Field(description="append to the server's public address and paste into Prolific")
    first_click_minutes: float
    lease_minutes: float


class LiveClick(BaseModel):
    x: float
    y: float
    participant: str
    created_at: str | None


class LiveView(BaseModel):
    task_id: int | None
    clicks: list[LiveClick]
    centroid: Point | None
    photo: str | None = None
    sketch: str | None = None
    category: str | None = None
    keypoint: int | None = None
    sketch_keypoint: Point | None = None
    photo_url: str | None = None
    sketch_url: str | None = None


class ParticipantStats(BaseModel):
    participant: str
    prolific_pid: str
    status: str
    flagged: bool
    catch_failed: int
    answered: int
    total: int
    mean_error_px: float | None
    n_compared: int
    median_rt_ms: float | None = Field(description="the client's rt_ms (as sent)")
    median_server_rt_ms: float | None = Field(description="median time from serving a trial to its click, "
                                                           "measured by the server (ms)")
    too_fast: bool = Field(description="median_server_rt_ms under the study's min_median_response_ms")
    resume_refused: int = Field(description="attempts to resume this Prolific ID from another SESSION_ID")
    last_resume_refused_at: str | None
    created_at: str | None
    expires_at: str | None
    completed_at: str | None


class Participants(BaseModel):
    participants: list[ParticipantStats]
