"""What the participant page shows before a session: the study's texts and practice trials,
and the images of practice trials, of a session's trials and (for the admin) of any task."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import bindparam, select, update

from psc6k import IMAGE_SIZE
from psc6k.errors import NotFoundError

from .. import db
from ..study import draw_practice

T, P, TR, S = db.tasks, db.pairs, db.trials, db.sessions

_U_SERVED = update(TR).where(TR.c.id == bindparam("tid"), TR.c.served_at.is_(None)).values(served_at=bindparam("now"))
_U_FIRST_SERVED = (update(S).where(S.c.id == bindparam("sid"), S.c.first_served_at.is_(None))
                   .values(first_served_at=bindparam("now")))


def mark_served(conn, session_id: int, trial_id: int, now: float) -> None:
    """The server handed out a trial's images at ``now`` (epoch s): the trial's ``served_at``
    (a click's server-side response time starts there) and, for the session's first trial, its
    ``first_served_at`` (the first-click window starts there). Only the first time counts."""
    conn.execute(_U_SERVED, {"tid": trial_id, "now": now})
    conn.execute(_U_FIRST_SERVED, {"sid": session_id, "now": now})


class StudyInfo:
    def __init__(self, store):
        self.store = store
        self._practice = None

    def practice_items(self) -> list[dict]:
        """Practice trials: fixed at init (``[[practice.items]]``, or pairs drawn and taken out
        of the study). A study made before that draws ``practice.count`` study pairs here, and
        shows them without answers (they are tasks whose clicks count)."""
        if self._practice is None:
            cfg = self.store.config
            self._practice = (self._configured_practice() if cfg.practice_fixed or cfg.practice_items
                              else self._legacy_practice())
        return self._practice

    def _configured_practice(self) -> list[dict]:
        cfg = self.store.config
        return [{"photo": it.photo, "sketch": it.sketch, "keypoint": it.keypoint,
                 "sketch_keypoint": it.sketch_keypoint, "answer": it.answer,
                 "tolerance_px": (it.tolerance_px or cfg.practice_tolerance_px) if it.answer else None}
                for it in cfg.practice_items]

    def _legacy_practice(self) -> list[dict]:
        cfg = self.store.config
        with self.store.read.connect() as conn:
            rows = conn.execute(select(P).where(P.c.id.in_(select(T.c.pair_id).where(T.c.is_catch == False)))  # noqa: E712
                                .order_by(P.c.id)).all()
        drawn = draw_practice([r._asdict() for r in rows], cfg.practice_count, cfg.seed, with_answers=False)
        return [{**d, "tolerance_px": None} for d in drawn]

    def study(self) -> dict:
        """``GET /api/study``: title, consent and instruction texts, practice trials."""
        cfg = self.store.config
        practice = [{"practice_id": i, "sketch_url": f"/api/study/practice/{i}/sketch",
                     "photo_url": f"/api/study/practice/{i}/photo", "sketch_keypoint": it["sketch_keypoint"],
                     "answer": it["answer"], "tolerance_px": it["tolerance_px"]}
                    for i, it in enumerate(self.practice_items())]
        return {"title": cfg.title, "consent_text": cfg.consent_text, "instructions_text": cfg.instructions_text,
                "trials_per_participant": cfg.trials_per_participant, "image_size": IMAGE_SIZE,
                "lease_minutes": cfg.lease_minutes, "practice": practice}

    def practice_image(self, i: int, which: str) -> Path:
        items = self.practice_items()
        if not 0 <= i < len(items):
            raise NotFoundError(f"no practice trial {i} (there are {len(items)})", field="practice_id")
        return self.store.image(items[i][which])

    def trial_image(self, token: str, trial_id: int, which: str) -> Path:
        """An image of one of the caller's own trials (404 for anyone else's). The first one
        served of a trial records when (:func:`mark_served`)."""
        col = P.c.photo if which == "photo" else P.c.sketch
        with self.store.read.connect() as conn:
            sess = self.store.session_by_token(conn, token)
            row = conn.execute(select(col.label("rel"), TR.c.served_at)
                               .select_from(TR.join(T, T.c.id == TR.c.task_id).join(P, P.c.id == T.c.pair_id))
                               .where(TR.c.id == trial_id, TR.c.session_id == sess.id)).first()
        if row is None:
            raise NotFoundError(f"trial_id {trial_id} is not a trial of this session", field="trial_id")
        path = self.store.image(row.rel)
        if row.served_at is None:
            now = self.store.clock()
            self.store.run_write(lambda conn: mark_served(conn, sess.id, trial_id, now))
        return path

    def task_image(self, task_id: int, which: str) -> Path:
        col = P.c.photo if which == "photo" else P.c.sketch
        with self.store.read.connect() as conn:
            rel = conn.execute(select(col).select_from(T.join(P, P.c.id == T.c.pair_id))
                               .where(T.c.id == task_id)).scalar_one_or_none()
        if rel is None:
            raise NotFoundError(f"no task {task_id}", field="task_id")
        return self.store.image(rel)
