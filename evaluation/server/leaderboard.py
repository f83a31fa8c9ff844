"""Ranking rules of the leaderboard (pure functions over stored entries).

An entry is ranked only when both overall scores are present and finite, it was scored against
the annotations this server serves (same SHA-256; published numbers are exempt), and it is not
hidden. Ties are broken by the other alpha, then by submission time (earlier first).
"""

from __future__ import annotations

from . import db

SORT_KEYS = {"pck@0.05": ("pck05", "pck10"), "pck@0.10": ("pck10", "pck05")}


def unranked_reason(entry: db.Entry, annotations_sha256: str) -> str | None:
    if db.finite_or_none(entry.pck05) is None or db.finite_or_none(entry.pck10) is None:
        return "missing or non-finite score"
    if not entry.ranked:
        return "missing or non-finite score"
    if entry.source != "paper" and entry.annotations_sha256 not in (None, annotations_sha256):
        return "scored against different annotations than this server's"
    return None


def rank(entries: list[db.Entry], annotations_sha256: str, sort_by: str = "pck@0.05"):
    """Split ``entries`` into (ranked, unranked); ranked is sorted best first.

    Returns
    -------
    ranked : list of (rank, entry)
        Ranks start at 1; equal scores on both alphas share a rank.
    unranked : list of (reason, entry)
    """
    first, second = SORT_KEYS[sort_by]
    ok, bad = [], []
    for entry in entries:
        reason = unranked_reason(entry, annotations_sha256)
        (bad.append((reason, entry)) if reason else ok.append(entry))
    ok.sort(key=lambda e: (-getattr(e, first), -getattr(e, second), e.created_at, e.id))
    ranked, previous, current_rank = [], None, 0
    for position, entry in enumerate(ok, start=1):
        score = (getattr(entry, first), getattr(entry, second))
        if score != previous:
            current_rank, previous = position, score
        ranked.append((current_rank, entry))
    return ranked, bad


def entry_json(entry: db.Entry, rank_: int | None, reason: str | None, private: bool) -> dict:
    scores = entry.scores or {}
    overall = {"pck@0.05": db.finite_or_none(entry.pck05), "pck@0.10": db.finite_or_none(entry.pck10)}
    out = {
        "id": entry.id, "rank": rank_, "method": entry.method, "submitter": entry.submitter,
        "paper_url": entry.paper_url, "encoder": entry.encoder, "supervision": entry.supervision,
        "description": entry.description, "reported_in_paper": entry.source == "paper", "split": entry.split,
        "scorer_version": entry.scorer_version, "n_pairs": entry.n_pairs, "overall": overall,
        "per_direction": scores.get("per_direction"),
        "per_category": None if private else scores.get("per_category"),
        "ranked": reason is None, "unranked_reason": reason, "created_at": entry.created_at,
    }
    return out
