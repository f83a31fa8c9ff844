"""Ranking rules of the leaderboard (pure functions over stored entries).

Every entry carries a *protocol* (split, threshold basis, resolution, averaging). Only entries on
the protocol of this server are ranked together:

- an entry scored here is ranked when both overall scores are present and finite, it was scored
  against the annotations this server serves (same SHA-256), and it is not hidden;
- a published number (``source == "paper"``) is ranked only when its protocol is this server's
  (the full PSC6K test set) and it belongs to the main comparison; ablations, numbers on another
  split (SketchFusion) and, on a server holding anything but the full PSC6K test set, all
  published numbers are listed apart, with the reason, never ranked.

Ties are broken by the other alpha, then by submission time (earlier first).
"""

from __future__ import annotations

from psc6k.protocols import DEFAULT_PROTOCOL, get_protocol
from psc6k.sketchy import SKETCHY_CATEGORIES

from . import db
from .seed import PROTOCOLS

SORT_KEYS = {"pck@0.05": ("pck05", "pck10"), "pck@0.10": ("pck10", "pck05")}
PSC6K_TEST = "psc6k-test"
#: Shape of the full PSC6K test set (SPEC §1): 6,250 pairs, 125 categories, 10 photos each.
FULL_TEST_PAIRS, FULL_TEST_CATEGORIES, FULL_TEST_PHOTOS = 6250, 125, 1250
BADGE_REPORTED, BADGE_VERIFIED = "reported", "verified here"


def server_protocol(annotations, annotations_sha256: str, private: bool = False) -> tuple[str, dict]:
    """(protocol id, description) of the annotations a server scores against.

    The full PSC6K test set (6,250 pairs over the 125 Sketchy categories, 1,250 photos) is
    ``psc6k-test``, the protocol of the paper's numbers. Anything else (the bundled sample, a
    synthetic benchmark, a hidden split) is its own protocol, named by the annotations' hash.
    """

    categories = set(annotations.category)
    full = (len(annotations) == FULL_TEST_PAIRS and len(categories) == FULL_TEST_CATEGORIES
            and categories <= set(SKETCHY_CATEGORIES) and len(set(annotations.photo)) == FULL_TEST_PHOTOS)
    base = PROTOCOLS[PSC6K_TEST]
    if full and not private:
        return PSC6K_TEST, dict(base)
    name = "hidden split" if private else "this server's annotations"
    return f"annotations:{annotations_sha256[:12]}", {
        **base, "name": name,
        "split": f"{len(annotations)} pairs, {len(categories)} categories ({name}; not the full PSC6K test set)",
    }


def published_protocol_id(entry: db.Entry) -> str:
    """Protocol a published number was measured on (stored with its seed; default PSC6K's)."""
    return (entry.scores or {}).get("protocol_id") or PSC6K_TEST


def unranked_reason(entry: db.Entry, annotations_sha256: str, protocol_id: str = PSC6K_TEST) -> str | None:
    if db.finite_or_none(entry.pck05) is None or db.finite_or_none(entry.pck10) is None:
        return "missing or non-finite score"
    if not entry.ranked:
        return "missing or non-finite score"
    if entry.source == "paper":
        scores = entry.scores or {}
        if scores.get("view", "main") != "main":
            table = (scores.get("citation") or {}).get("table", "ablation")
            return f"ablation ({table}): a variant of one method, not a competing entry"
        theirs = published_protocol_id(entry)
        if theirs != protocol_id:
            if theirs == PSC6K_TEST:
                return "measured on the full PSC6K test set (6,250 pairs), not on this server's annotations"
            return f"different protocol: {PROTOCOLS.get(theirs, {}).get('name', theirs)}"
        return None
    if entry.annotations_sha256 not in (None, annotations_sha256):
        return "scored against different annotations than this server's"
    return evaluation_protocol_reason(entry)


def evaluation_protocol_reason(entry: db.Entry, expected=DEFAULT_PROTOCOL) -> str | None:
    """Why an entry scored here cannot rank with this server's: its evaluation protocol
    (``provenance.protocol_sha256``, :mod:`psc6k.protocols`) is not the one this server scores
    with. Entries stored before provenance existed carry none and are left alone."""
    provenance = (entry.scores or {}).get("provenance") or {}
    theirs = provenance.get("protocol_sha256")
    if theirs is None or theirs == get_protocol(expected).sha256:
        return None
    return f"scored under evaluation protocol {provenance.get('protocol')!r}, not this server's {expected!r}"


def rank(entries: list[db.Entry], annotations_sha256: str, sort_by: str = "pck@0.05",
         protocol_id: str = PSC6K_TEST):
    """Split ``entries`` into (ranked, unranked); ranked is sorted best first.

    Parameters
    ----------
    protocol_id : str
        The server's protocol (:func:`server_protocol`); published numbers on another one are
        never ranked.

    Returns
    -------
    ranked : list of (rank, entry)
        Ranks start at 1; equal scores on both alphas share a rank.
    unranked : list of (reason, entry)
    """
    first, second = SORT_KEYS[sort_by]
    ok, bad = [], []
    for entry in entries:
        reason = unranked_reason(entry, annotations_sha256, protocol_id)
        (bad.append((reason, entry)) if reason else ok.append(entry))
    ok.sort(key=lambda e: (-getattr(e, first), -getattr(e, second), e.created_at, e.id))
    ranked, previous, current_rank = [], None, 0
    for position, entry in enumerate(ok, start=1):
        score = (getattr(entry, first), getattr(entry, second))
        if score != previous:
            current_rank, previous = position, score
        ranked.append((current_rank, entry))
    return ranked, bad


def entry_json(entry: db.Entry, rank_: int | None, reason: str | None, private: bool,
               protocol: tuple[str, dict] | None = None, annotations_sha256: str | None = None) -> dict:
    """One entry as the API shows it; ``protocol`` is the server's (:func:`server_protocol`)."""
    scores = entry.scores or {}
    overall = {"pck@0.05": db.finite_or_none(entry.pck05), "pck@0.10": db.finite_or_none(entry.pck10)}
    published = entry.source == "paper"
    if published:
        protocol_id = published_protocol_id(entry)
        protocol_info = PROTOCOLS.get(protocol_id)
    elif protocol is not None and entry.annotations_sha256 in (None, annotations_sha256):
        protocol_id, protocol_info = protocol
    else:
        protocol_id, protocol_info = f"annotations:{(entry.annotations_sha256 or '')[:12]}", None
    out = {
        "id": entry.id, "rank": rank_, "method": entry.method, "submitter": entry.submitter,
        "paper_url": entry.paper_url, "encoder": entry.encoder, "supervision": entry.supervision,
        "description": entry.description, "reported_in_paper": published, "split": entry.split,
        "scorer_version": entry.scorer_version, "n_pairs": entry.n_pairs, "overall": overall,
        "per_direction": scores.get("per_direction"),
        "per_category": None if private else scores.get("per_category"),
        "ranked": reason is None, "unranked_reason": reason, "created_at": entry.created_at,
        "badge": BADGE_REPORTED if published else BADGE_VERIFIED,
        "protocol_id": protocol_id, "protocol": protocol_info,
        "citation": scores.get("citation") if published else None,
        "view": scores.get("view", "main") if published else "main",
        "provenance": None if published else scores.get("provenance"),
    }
    return out
