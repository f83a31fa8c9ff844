"""What the participant page shows before a session: the study's texts and practice trials,
and the images of practice trials, of a session's trials and (for the admin) of any task."""

from __future__ import annotations

import json
import random
from pathlib import Path

from sqlalchemy import select

from psc6k import IMAGE_SIZE, NUM_KEYPOINTS
from psc6k.errors import NotFoundError

from .. import db

T, P, TR = db.tasks, db.pairs, db.trials


class StudyInfo:
    def __init__(self, store):
        self.store = store
        self._practice = None

    def practice_items(self) -> list[dict]:
        """Practice trials: the config's ``[[practice.items]]``, else ``practice.count`` study
        pairs from distinct categories, with the known answer when the pairs CSV had one."""
        if self._practice is None:
            self._practice = self._configured_practice() or self._drawn_practice()
        return self._practice

    def _configured_practice(self) -> list[dict]:
        cfg = self.store.config
        return [{"photo": it.photo, "sketch": it.sketch, "keypoint": it.keypoint,
                 "sketch_keypoint": it.sketch_keypoint, "answer": it.answer,
                 "tolerance_px": (it.tolerance_px or cfg.practice_tolerance_px) if it.answer else None}
                for it in cfg.practice_items]

    def _drawn_practice(self) -> list[dict]:
        cfg = self.store.config
        if cfg.practice_count <= 0:
            return []
        with self.store.read.connect() as conn:
            rows = conn.execute(select(P).where(P.c.id.in_(select(T.c.pair_id).where(T.c.is_catch == False)))  # noqa: E712
                                .order_by(P.c.id)).all()
        pool = [r for r in rows if r.photo_kps_json] or list(rows)
        random.Random(cfg.seed).shuffle(pool)
        items, seen = [], set()
        for r in pool:
            if r.category in seen:
                continue
            seen.add(r.category)
            k = len(items) % NUM_KEYPOINTS
            ans = json.loads(r.photo_kps_json)[k] if r.photo_kps_json else None
            items.append({"photo": r.photo, "sketch": r.sketch, "keypoint": k,
                          "sketch_keypoint": json.loads(r.sketch_kps_json)[k], "answer": ans,
                          "tolerance_px": cfg.practice_tolerance_px if ans else None})
            if len(items) == cfg.practice_count:
                break
        return items

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
        """An image of one of the caller's own trials (404 for anyone else's)."""
        col = P.c.photo if which == "photo" else P.c.sketch
        with self.store.read.connect() as conn:
            sess = self.store.session_by_token(conn, token)
            rel = conn.execute(select(col).select_from(TR.join(T, T.c.id == TR.c.task_id).join(P, P.c.id == T.c.pair_id))
                               .where(TR.c.id == trial_id, TR.c.session_id == sess.id)).scalar_one_or_none()
        if rel is None:
            raise NotFoundError(f"trial_id {trial_id} is not a trial of this session", field="trial_id")
        return self.store.image(rel)

    def task_image(self, task_id: int, which: str) -> Path:
        col = P.c.photo if which == "photo" else P.c.sketch
        with self.store.read.connect() as conn:
            rel = conn.execute(select(col).select_from(T.join(P, P.c.id == T.c.pair_id))
                               .where(T.c.id == task_id)).scalar_one_or_none()
        if rel is None:
            raise NotFoundError(f"no task {task_id}", field="task_id")
        return self.store.image(rel)
