"""Pydantic models of the server's requests and replies (they make up the OpenAPI schema)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, Optional

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, field_validator

from psc6k_web.errors import ErrorBody
from psc6k_web.text import SafeText

Supervision = Literal["transfer", "retrain", "keypoint"]
#: A leaderboard entry id in a path (ids are 32 hex digits; anything longer is simply not found).
EntryId = Annotated[SafeText, Path(max_length=200, description="leaderboard entry id")]


#: Every 4xx/5xx reply (the web layer's one error body: ``detail``, ``code``, the error's fields).
Problem = ErrorBody


class ScoreReply(BaseModel):
    """``psc6k eval --json`` plus ``submission_id``. In private mode only the keys of
    ``evaluation.server.private.PRIVATE_KEYS`` are present (rounded PCK, counts, protocol)."""

    model_config = ConfigDict(extra="allow")

    submission_id: str
    scorer_version: str
    method: str
    kind: str
    overall: dict[str, Optional[float]]
    per_direction: dict[str, dict[str, Optional[float]]]
    per_category: Optional[dict[str, dict[str, Optional[float]]]] = None
    mean_error_px: Optional[dict[str, Optional[float]]] = None
    ci95: Optional[dict[str, list[Optional[float]]]] = None
    pck_step: Optional[float] = Field(None, description="private mode: the rounding step of every PCK value "
                                                        "(percentage points)")
    n_pairs: int
    n_annotated: int
    coverage: float
    protocol: dict


class SubmissionReply(ScoreReply):
    """A stored leaderboard submission: the score plus where it ranks and the quota left today."""

    entry_id: str
    ranked: bool
    rank: Optional[int] = None
    unranked_reason: Optional[str] = None
    quota_left_today: int


class LeaderboardEntry(BaseModel):
    id: str
    rank: Optional[int] = None
    method: str
    submitter: Optional[str] = None
    paper_url: Optional[str] = None
    encoder: Optional[str] = None
    supervision: Optional[str] = None
    description: Optional[str] = None
    reported_in_paper: bool
    split: str
    scorer_version: str
    n_pairs: Optional[int] = None
    overall: dict[str, Optional[float]]
    per_direction: Optional[dict[str, dict[str, Optional[float]]]] = None
    per_category: Optional[dict[str, dict[str, Optional[float]]]] = None
    ranked: bool
    unranked_reason: Optional[str] = None
    created_at: dt.datetime
    badge: Literal["reported", "verified here"] = Field(
        description="reported: a published number this server did not score; verified here: scored by this server")
    protocol_id: Optional[str] = Field(None, description="psc6k-test, sketchfusion-split, or annotations:<sha256 prefix>")
    protocol: Optional[dict[str, str]] = Field(None, description="split, threshold basis, resolution, averaging")
    citation: Optional[dict[str, str]] = Field(None, description="published numbers: paper, url, table, row")
    view: Optional[str] = Field(None, description="main, or ablation (the paper's Tables 2, 3, 5)")


class Leaderboard(BaseModel):
    sort_by: str
    private: bool
    split: str
    scorer_version: str
    protocol_id: str = Field(description="the protocol of this server's ranking")
    protocol: dict[str, str]
    ranked: list[LeaderboardEntry] = Field(description="entries on this server's protocol, best first")
    unranked: list[LeaderboardEntry] = Field(description="submissions that cannot be ranked, with the reason")
    published: list[LeaderboardEntry] = Field(
        default_factory=list, description="published numbers not ranked here (other protocol, ablations), with the reason")


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SafeText = Field(min_length=1, max_length=200, description="who the token is for (team, person)")
    daily_quota: Optional[int] = Field(default=None, ge=0, le=100_000,
                                       description="accepted submissions per UTC day; default: the server's")

    @field_validator("name")
    @classmethod
    def _strip(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("name must not be blank")
        return v


class TokenInfo(BaseModel):
    id: int
    name: str
    prefix: str
    daily_quota: Optional[int] = None
    created_at: dt.datetime
    revoked_at: Optional[dt.datetime] = None


class TokenCreated(TokenInfo):
    token: str = Field(description="the bearer token; shown once, only its hash is stored")


class WhoAmI(BaseModel):
    id: int
    name: str
    daily_quota: int
    quota_left_today: int


class EntryPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hidden: bool


class Health(BaseModel):
    status: str
    scorer_version: str
    private: bool
    split: str
    n_pairs: int
    annotations_sha256: str


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    metadata: dict
    scores: Optional[dict] = None


class ModelList(BaseModel):
    models: list[ModelInfo]
    note: Optional[str] = None
