"""The dashboard's numbers: progress, the live view of one keypoint, per-participant quality."""

from __future__ import annotations

import json

import numpy as np
from sqlalchemy import and_, func, select

from psc6k.aggregate import leave_one_out_distances
from psc6k.errors import NotFoundError

from .. import db
from .leases import Leases
from .speed import session_speeds
from .store import iso

T, P, S, C, SL, TR, RR = db.tasks, db.pairs, db.sessions, db.clicks, db.slots, db.trials, db.resume_refusals


def click_rows(conn, *, include_all: bool = False, task_id: int | None = None):
    """Clicks with their participant and pair, in storage order; only the counted ones (no
    catch trial, no flagged session) unless ``include_all``."""
    q = (select(C.c.id, C.c.task_id, S.c.participant, P.c.photo, P.c.sketch, T.c.keypoint, C.c.x, C.c.y,
                C.c.rt_ms, C.c.created_at, C.c.display_json, C.c.excluded, T.c.is_catch, C.c.session_id,
                TR.c.served_at)
         .select_from(C.join(S, S.c.id == C.c.session_id).join(T, T.c.id == C.c.task_id)
                      .join(P, P.c.id == T.c.pair_id).join(TR, TR.c.id == C.c.trial_id)).order_by(C.c.id))
    if not include_all:
        q = q.where(C.c.excluded == False, T.c.is_catch == False)  # noqa: E712
    if task_id is not None:
        q = q.where(C.c.task_id == task_id)
    return conn.execute(q).all()


class AdminStats:
    def __init__(self, store):
        self.store = store

    def progress(self) -> dict:
        """Sessions by status, filled slots (total and per category), how many keypoints have
        k counted clicks, median trial time, dropout. Releases lapsed leases first."""
        Leases(self.store).release_lapsed()
        n = self.store.config.annotators_per_keypoint
        with self.store.read.connect() as conn:
            status = dict(conn.execute(select(S.c.status, func.count()).group_by(S.c.status)).all())
            per_cat = conn.execute(select(T.c.category, func.count(), func.sum(func.cast(SL.c.filled, db.Integer)))
                                   .select_from(SL.join(T, T.c.id == SL.c.task_id))
                                   .group_by(T.c.category).order_by(T.c.category)).all()
            filled_per_task = select(T.c.id, func.count(C.c.id).label("k")).select_from(
                T.outerjoin(C, and_(C.c.task_id == T.c.id, C.c.slot_index.is_not(None)))).where(
                T.c.is_catch == False).group_by(T.c.id).subquery()  # noqa: E712
            hist = dict(conn.execute(select(filled_per_task.c.k, func.count()).group_by(filled_per_task.c.k)).all())
            rts = conn.execute(select(C.c.rt_ms).where(C.c.excluded == False, C.c.rt_ms.is_not(None))).scalars().all()  # noqa: E712
            flagged = conn.execute(select(func.count()).select_from(S).where(S.c.flagged == True)).scalar_one()  # noqa: E712
            speeds = session_speeds(conn, self.store.config.min_median_response_ms)
            refused = conn.execute(select(func.count()).select_from(RR)).scalar_one()
        completed, expired = status.get("completed", 0), status.get("expired", 0)
        return {
            "sessions": {"started": sum(status.values()), "completed": completed, "expired": expired,
                         "active": status.get("active", 0), "flagged": flagged,
                         "too_fast": sum(v["too_fast"] for v in speeds.values()), "resume_refused": refused},
            "slots": {"filled": sum(int(f or 0) for _, _, f in per_cat), "total": sum(int(t) for _, t, _ in per_cat)},
            "per_category": [{"category": c, "filled": int(f or 0), "total": int(t)} for c, t, f in per_cat],
            "clicks_per_keypoint": {str(k): int(hist.get(k, 0)) for k in range(n + 1)},
            "median_trial_ms": float(np.median(rts)) if rts else None,
            "dropout_rate": expired / (completed + expired) if completed + expired else None,
        }

    def study_link(self) -> dict:
        """What the researcher pastes into Prolific (the page adds its own address)."""
        cfg = self.store.config
        return {"link_key": cfg.link_key or None, "study_url_path": cfg.study_url(base=""),
                "first_click_minutes": cfg.first_click_minutes, "lease_minutes": cfg.lease_minutes}

    def live(self, task_id: int | None = None) -> dict:
        """The clicks of one keypoint (default: the most recently clicked) and their centroid."""
        with self.store.read.connect() as conn:
            if task_id is None:
                task_id = conn.execute(select(C.c.task_id).join(T, T.c.id == C.c.task_id).where(T.c.is_catch == False)  # noqa: E712
                                       .order_by(C.c.created_at.desc(), C.c.id.desc()).limit(1)).scalar_one_or_none()
                if task_id is None:
                    return {"task_id": None, "clicks": [], "centroid": None}
            task = conn.execute(select(T, P.c.photo, P.c.sketch, P.c.sketch_kps_json)
                                .select_from(T.join(P, P.c.id == T.c.pair_id)).where(T.c.id == task_id)).first()
            if task is None:
                raise NotFoundError(f"no task {task_id}", field="task_id")
            rows = click_rows(conn, task_id=task_id)
        pts = [{"x": r.x, "y": r.y, "participant": r.participant, "created_at": iso(r.created_at)} for r in rows]
        centroid = [float(np.mean([p["x"] for p in pts])), float(np.mean([p["y"] for p in pts]))] if pts else None
        return {"task_id": task_id, "photo": task.photo, "sketch": task.sketch, "category": task.category,
                "keypoint": task.keypoint, "sketch_keypoint": json.loads(task.sketch_kps_json)[task.keypoint],
                "clicks": pts, "centroid": centroid,
                "photo_url": f"/api/admin/images/{task_id}/photo", "sketch_url": f"/api/admin/images/{task_id}/sketch"}

    def participants(self) -> list[dict]:
        """Per-session stats, with each participant's mean distance to the consensus (the
        centroid of the other participants' clicks on the same keypoint)."""
        import pandas as pd

        with self.store.read.connect() as conn:
            sessions = conn.execute(select(S).order_by(S.c.id)).all()
            counts = dict(conn.execute(select(C.c.session_id, func.count()).group_by(C.c.session_id)).all())
            rows = click_rows(conn)
            speeds = session_speeds(conn, self.store.config.min_median_response_ms)
            refused = {sid: (n, last) for sid, n, last in conn.execute(
                select(RR.c.session_id, func.count(), func.max(RR.c.created_at)).group_by(RR.c.session_id))}
        err: dict[int, list] = {}
        rts: dict[int, list] = {}
        if rows:
            frame = pd.DataFrame({"photo": [r.photo for r in rows], "sketch": [r.sketch for r in rows],
                                  "keypoint": [r.keypoint for r in rows], "x": [r.x for r in rows],
                                  "y": [r.y for r in rows]})
            for r, d in zip(rows, leave_one_out_distances(frame)):
                if np.isfinite(d):
                    err.setdefault(r.session_id, []).append(float(d))
                if r.rt_ms is not None:
                    rts.setdefault(r.session_id, []).append(r.rt_ms)
        out = []
        for s in sessions:
            answered = counts.get(s.id, 0)
            e = err.get(s.id, [])
            speed = speeds.get(s.id, {})
            n_refused, last_refused = refused.get(s.id, (0, None))
            out.append({"participant": s.participant, "prolific_pid": s.prolific_pid,
                        "status": self.store.session_status(s, answered), "flagged": bool(s.flagged),
                        "catch_failed": s.catch_failed, "answered": answered, "total": s.n_trials,
                        "mean_error_px": float(np.mean(e)) if e else None, "n_compared": len(e),
                        "median_rt_ms": float(np.median(rts[s.id])) if rts.get(s.id) else None,
                        "median_server_rt_ms": speed.get("median_server_rt_ms"),
                        "too_fast": bool(speed.get("too_fast", False)),
                        "resume_refused": n_refused, "last_resume_refused_at": iso(last_refused),
                        "created_at": iso(s.created_at), "expires_at": iso(s.expires_at),
                        "completed_at": iso(s.completed_at)})
        return out
