"""The annotation service's logic, independent of HTTP: sessions, plans, clicks, leases, catch
trials and the admin views. :mod:`annotation_app.app` maps it onto routes.

Every method opens its own transaction; an error the caller can act on raises :class:`ApiError`
(an HTTP status, a message naming the field, and extra JSON fields).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import math
import os
import random
import secrets
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from psc6k import NUM_KEYPOINTS

from . import db
from .config import StudyConfig
from .study import resolve_image
from psc6k.jsonsafe import json_safe

T, P, S, TR, C, SL = db.tasks, db.pairs, db.sessions, db.trials, db.clicks, db.slots


# The click path's statements, built once: constructing SQLAlchemy expressions costs more CPU
# than running them on SQLite.
_Q_SESSION = select(S).where(S.c.token == bindparam("token"))
_Q_EARLIER = select(C.c.trial_id, C.c.client_id, C.c.reply_json).where(
    C.c.session_id == bindparam("sid"), or_(C.c.client_id == bindparam("cid"), C.c.trial_id == bindparam("tid")))
_Q_TRIAL = (select(TR.c.task_id, TR.c.slot_index, TR.c.is_catch, T.c.answer_x, T.c.answer_y, T.c.tolerance_px)
            .select_from(TR.join(T, T.c.id == TR.c.task_id))
            .where(TR.c.id == bindparam("tid"), TR.c.session_id == bindparam("sid")))
_U_FILL = (update(SL).where(SL.c.task_id == bindparam("task"), SL.c.slot_index == bindparam("slot"),
                            SL.c.holder_session_id == bindparam("sid"), SL.c.filled == False)  # noqa: E712
           .values(filled=True))
_Q_PROGRESS = (select(func.count(C.c.id), func.min(case((and_(C.c.id.is_(None), TR.c.id != bindparam("tid")), TR.c.idx))))
               .select_from(TR.outerjoin(C, C.c.trial_id == TR.c.id)).where(TR.c.session_id == bindparam("sid")))
_I_CLICK = insert(C)


class ApiError(Exception):
    """An error the client can act on: HTTP ``status``, ``detail`` message, extra JSON fields."""

    def __init__(self, http_status: int, detail: str, /, **extra):
        super().__init__(detail)
        self.status, self.detail, self.extra = http_status, detail, extra


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ``2026-01-31T12:00:00.000Z``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StudyService:
    """One study in one database.

    Parameters
    ----------
    db_url : str
        SQLAlchemy URL or SQLite file path of a database made by ``psc6k annotate init``.
    image_root : path, optional
        Override the images root stored at init (the Sketchy folder moved).
    clock : callable, optional
        Returns epoch seconds; tests pass a fake one to make leases lapse.
    """

    def __init__(self, db_url: str, *, image_root=None, clock=None, pool_size: int = 10):
        import time

        self.clock = clock or time.time
        from sqlalchemy.engine import make_url

        url = db.normalise_url(db_url)
        shown = make_url(url).render_as_string(hide_password=True)
        if db.is_sqlite(url):
            path = make_url(url).database
            if not path or not Path(path).is_file():
                raise ApiError(500, f"no study database at {path} (run psc6k annotate init first)")
        self.write, self.read = db.make_engines(url, pool_size=pool_size)
        self.is_sqlite = db.is_sqlite(self.write)
        try:
            with self.read.connect() as conn:
                row = conn.execute(select(db.study)).first()
        except (OperationalError, ProgrammingError) as exc:
            self.close_engines()
            raise ApiError(500, f"{shown} holds no study (run psc6k annotate init first): "
                                f"{str(exc.orig).strip().splitlines()[0]}") from None
        if row is None:
            self.close_engines()
            raise ApiError(500, f"{shown} holds no study (run psc6k annotate init first)")
        self._thread_lock = threading.Lock()
        self._lock_fd = None
        if self.is_sqlite:
            # One writer at a time across threads and worker processes, queued on a lock file:
            # flock wakes the next writer at once, where SQLite's busy timeout polls with sleeps
            # of up to 100 ms (a p99 killer under load).
            lock_path = str(self.write.url.database) + ".writelock"
            self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        self.config = StudyConfig.from_dict(json.loads(row.config_json))
        self.salt = row.salt
        self.image_root = Path(image_root or row.image_root).resolve()
        self._practice = None

    @contextmanager
    def _write_tx(self):
        """A write transaction (BEGIN IMMEDIATE on SQLite, behind the writer lock file)."""
        if self._lock_fd is None:
            with self.write.begin() as conn:
                yield conn
            return
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                with self.write.begin() as conn:
                    yield conn
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close_engines(self):
        self.write.dispose()
        if self.read is not self.write:
            self.read.dispose()

    def close(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self.write.dispose()
        if self.read is not self.write:
            self.read.dispose()

    # ------------------------------------------------------------------ helpers
    def pseudonym(self, prolific_pid: str) -> str:
        """Salted pseudonym of a Prolific id (HMAC-SHA256 with the study's secret salt)."""
        return "P" + hmac.new(self.salt.encode(), prolific_pid.encode(), hashlib.sha256).hexdigest()[:15]

    def _lock(self, conn):
        """Serialise plan building / slot release. SQLite: BEGIN IMMEDIATE already did it."""
        if not self.is_sqlite:
            conn.execute(select(db.study.c.id).where(db.study.c.id == 1).with_for_update())

    def _session_by_token(self, conn, token: str):
        sess = conn.execute(_Q_SESSION, {"token": token}).first()
        if sess is None:
            raise ApiError(404, "unknown session token (start again from the study link)", field="token")
        return sess

    # ------------------------------------------------------------------ study and practice
    def practice_items(self) -> list[dict]:
        """Practice trials: the config's ``[[practice.items]]``, else ``practice.count`` study
        pairs from distinct categories, with the known answer when the pairs CSV had one."""
        if self._practice is not None:
            return self._practice
        cfg = self.config
        items = []
        for it in cfg.practice_items:
            items.append({"photo": it.photo, "sketch": it.sketch, "keypoint": it.keypoint,
                          "sketch_keypoint": it.sketch_keypoint, "answer": it.answer,
                          "tolerance_px": (it.tolerance_px or cfg.practice_tolerance_px) if it.answer else None})
        if not items and cfg.practice_count > 0:
            with self.read.connect() as conn:
                rows = conn.execute(select(P).where(P.c.id.in_(select(T.c.pair_id).where(T.c.is_catch == False)))  # noqa: E712
                                    .order_by(P.c.id)).all()
            with_answer = [r for r in rows if r.photo_kps_json]
            pool = with_answer or rows
            rng = random.Random(cfg.seed)
            rng.shuffle(pool := list(pool))
            seen = set()
            for r in pool:
                if r.category in seen:
                    continue
                seen.add(r.category)
                k = len(items) % NUM_KEYPOINTS
                sk = json.loads(r.sketch_kps_json)[k]
                ans = json.loads(r.photo_kps_json)[k] if r.photo_kps_json else None
                items.append({"photo": r.photo, "sketch": r.sketch, "keypoint": k, "sketch_keypoint": sk,
                              "answer": ans, "tolerance_px": cfg.practice_tolerance_px if ans else None})
                if len(items) == cfg.practice_count:
                    break
        self._practice = items
        return items

    def study_info(self) -> dict:
        cfg = self.config
        practice = [{"practice_id": i, "sketch_url": f"/api/study/practice/{i}/sketch",
                     "photo_url": f"/api/study/practice/{i}/photo", "sketch_keypoint": it["sketch_keypoint"],
                     "answer": it["answer"], "tolerance_px": it["tolerance_px"]}
                    for i, it in enumerate(self.practice_items())]
        return {"title": cfg.title, "consent_text": cfg.consent_text, "instructions_text": cfg.instructions_text,
                "trials_per_participant": cfg.trials_per_participant, "image_size": 256,
                "lease_minutes": cfg.lease_minutes, "practice": practice}

    def practice_image(self, i: int, which: str) -> Path:
        items = self.practice_items()
        if not 0 <= i < len(items):
            raise ApiError(404, f"no practice trial {i} (there are {len(items)})", field="practice_id")
        return self._image(items[i][which])

    def _image(self, rel: str) -> Path:
        path = resolve_image(self.image_root, rel)
        if not path.is_file():
            raise ApiError(404, "image file is missing on the server")
        return path

    # ------------------------------------------------------------------ sessions
    def _release_expired(self, conn, now: float) -> int:
        """Give the unanswered slots of lapsed sessions back to the pool (caller holds the lock)."""
        ids = conn.execute(select(S.c.id).where(S.c.status == "active", S.c.expires_at < now)).scalars().all()
        if not ids:
            return 0
        # RETURNING: exactly the slots released here (a click may fill one concurrently on PostgreSQL)
        task_ids = conn.execute(update(SL).where(SL.c.holder_session_id.in_(ids), SL.c.filled == False)  # noqa: E712
                                .values(holder_session_id=None).returning(SL.c.task_id)).scalars().all()
        self._add_free(conn, task_ids, +1)
        if task_ids:
            self._bump(conn)
        conn.execute(update(S).where(S.c.id.in_(ids)).values(status="expired"))
        return len(ids)

    @staticmethod
    def _add_free(conn, task_ids, delta: int):
        counts: dict[int, int] = {}
        for t in task_ids:
            counts[t] = counts.get(t, 0) + 1
        if counts:
            conn.execute(update(T).where(T.c.id == bindparam("tid")).values(n_free=T.c.n_free + bindparam("d")),
                         [{"tid": t, "d": delta * c} for t, c in counts.items()])

    def release_expired(self) -> int:
        with self._write_tx() as conn:
            self._lock(conn)
            return self._release_expired(conn, self.clock())

    def _plan_candidates(self, conn, rng: random.Random) -> tuple:
        """Read what a new plan would take (no lock needed; :meth:`_claim` takes it).

        Categories are dealt round-robin, fullest first, so each participant gets one pair per
        category when trials_per_participant <= categories; inside a category the task with the
        most free slots wins (ties: a random rank fixed at init), so every keypoint gets its
        first click before any gets its second: slots fill evenly and the study ends with the
        minimum number of sessions.

        Returns
        -------
        (alloc, catch, avoid, by_cat): trials wanted per category, the catch tasks drawn, their
        (pair, keypoint)s, and per category the best candidate tasks in order.
        """
        cfg = self.config
        want = cfg.trials_per_participant
        free = conn.execute(select(T.c.category, func.sum(T.c.n_free), func.count())
                            .where(T.c.is_catch == False, T.c.n_free > 0).group_by(T.c.category)).all()  # noqa: E712
        remaining = {c: int(f) for c, f, _ in free}
        n_tasks = {c: int(n) for c, _, n in free}
        alloc: dict[str, int] = {}
        total = 0
        while total < want:
            open_cats = [c for c in remaining if remaining[c] > 0 and alloc.get(c, 0) < n_tasks[c]]
            if not open_cats:
                break
            order = sorted(open_cats, key=lambda c: (-remaining[c], rng.random()))
            for c in order[: want - total]:
                alloc[c] = alloc.get(c, 0) + 1
                remaining[c] -= 1
                total += 1
        # catch trials first, so regular picks can avoid their (pair, keypoint)
        catch = []
        if cfg.catch_per_session:
            catch_tasks = conn.execute(select(T.c.id, T.c.pair_id, T.c.keypoint).where(T.c.is_catch == True)).all()  # noqa: E712
            catch = rng.sample(list(catch_tasks), min(cfg.catch_per_session, len(catch_tasks)))
        avoid = {(c.pair_id, c.keypoint) for c in catch}
        by_cat: dict[str, list] = {}
        if alloc:
            # One query for all categories: the best few tasks of each (most free slots, then rank).
            k = max(alloc.values()) * NUM_KEYPOINTS + len(avoid) + 1
            ranked = select(T.c.id, T.c.pair_id, T.c.keypoint, T.c.category, func.row_number().over(
                partition_by=T.c.category, order_by=(T.c.n_free.desc(), T.c.rank)).label("rn")).where(
                T.c.is_catch == False, T.c.n_free > 0).subquery()  # noqa: E712
            rows = conn.execute(select(ranked.c.id, ranked.c.pair_id, ranked.c.keypoint, ranked.c.category)
                                .where(ranked.c.rn <= k).order_by(ranked.c.category, ranked.c.rn)).all()
            for r in rows:
                by_cat.setdefault(r.category, []).append(r)
        return alloc, catch, avoid, by_cat

    def _claim(self, conn, session_id: int, candidates: tuple, rng: random.Random) -> list[dict]:
        """Take the slots of a plan (caller holds the lock and checked the plan is current)."""
        alloc, catch, avoid, by_cat = candidates
        chosen = []  # (task_id, category)
        for cat, need in alloc.items():
            rows = by_cat.get(cat, [])
            used_pairs: set[int] = set()
            picked: list[int] = []
            for prefer_new_pair in (True, False):  # distinct pairs first, then anything left
                for r in rows:
                    if len(picked) == need:
                        break
                    if r.id in picked or (r.pair_id, r.keypoint) in avoid:
                        continue
                    if prefer_new_pair and r.pair_id in used_pairs:
                        continue
                    picked.append(r.id)
                    used_pairs.add(r.pair_id)
            chosen += [(t, cat) for t in picked]
        if not chosen:
            return []
        task_ids = [t for t, _ in chosen]
        slot_of = dict(conn.execute(select(SL.c.task_id, func.min(SL.c.slot_index)).where(
            SL.c.task_id.in_(task_ids), SL.c.holder_session_id.is_(None)).group_by(SL.c.task_id)).all())
        chosen = [(t, c) for t, c in chosen if t in slot_of]
        res = conn.execute(update(SL).where(SL.c.task_id == bindparam("tid"), SL.c.slot_index == bindparam("sidx"),
                                            SL.c.holder_session_id.is_(None)).values(holder_session_id=session_id),
                           [{"tid": t, "sidx": slot_of[t]} for t, _ in chosen])
        if res.rowcount not in (-1, len(chosen)):
            raise RuntimeError("slot assignment raced although the plan lock was held")
        self._add_free(conn, [t for t, _ in chosen], -1)
        self._bump(conn)
        plan = [{"task_id": t, "slot_index": slot_of[t], "is_catch": False} for t, _ in chosen]
        plan += [{"task_id": c.id, "slot_index": None, "is_catch": True} for c in catch]
        rng.shuffle(plan)
        return plan

    @staticmethod
    def _bump(conn):
        conn.execute(update(db.study).where(db.study.c.id == 1).values(plan_version=db.study.c.plan_version + 1))

    def start_session(self, prolific_pid: str, study_id: str, session_id: str) -> tuple[dict, bool]:
        """Start (or resume) the session of ``prolific_pid``; returns (body, created).

        The plan is computed from a consistent read *outside* the write lock (it scans every
        task, tens of milliseconds on a full study, and clicks would queue behind it); under the
        lock it is used only if no slot was claimed or released since (``plan_version``),
        else recomputed there. Either way the slots are claimed exactly as if planned under
        the lock.
        """
        with self.read.connect() as conn:
            row = conn.execute(select(S.c.token).where(S.c.prolific_pid == prolific_pid)).first()
        if row is not None:
            return self.session_body(row.token), False
        rng = random.Random(secrets.randbits(64))
        with self.read.connect() as conn:
            with conn.begin():  # one snapshot (SQLite); the version is read first (PostgreSQL)
                version = conn.execute(select(db.study.c.plan_version)).scalar_one()
                candidates = self._plan_candidates(conn, rng)
        now = self.clock()
        token = secrets.token_urlsafe(24)
        try:
            with self._write_tx() as conn:
                self._lock(conn)
                if conn.execute(select(S.c.id).where(S.c.prolific_pid == prolific_pid)).first() is not None:
                    raise _Exists()
                self._release_expired(conn, now)
                if conn.execute(select(db.study.c.plan_version)).scalar_one() != version:
                    candidates = self._plan_candidates(conn, rng)  # slots moved meanwhile
                sid = conn.execute(insert(S).values(
                    token=token, prolific_pid=prolific_pid, participant=self.pseudonym(prolific_pid),
                    prolific_study_id=study_id, prolific_session_id=session_id, status="active",
                    flagged=False, catch_failed=0, n_trials=0, created_at=now,
                    expires_at=now + self.config.lease_seconds, completed_at=None).returning(S.c.id)).scalar_one()
                plan = self._claim(conn, sid, candidates, rng)
                if not plan or all(p["is_catch"] for p in plan):
                    raise ApiError(409, "the study is full: every keypoint already has its annotators "
                                        "(or is reserved by participants still working); please return "
                                        "the study on Prolific", reason="study_full")
                conn.execute(insert(TR), [{"session_id": sid, "idx": i, **p} for i, p in enumerate(plan)])
                conn.execute(update(S).where(S.c.id == sid).values(n_trials=len(plan)))
        except (_Exists, IntegrityError):
            # the same PID raced in from a second tab: its session exists now; never a second plan
            with self.read.connect() as conn:
                row = conn.execute(select(S.c.token).where(S.c.prolific_pid == prolific_pid)).first()
            if row is None:
                raise
            return self.session_body(row.token), False
        return self.session_body(token), True

    def session_body(self, token: str, conn=None) -> dict:
        if conn is None:
            with self.read.connect() as conn:
                return self.session_body(token, conn)
        sess = self._session_by_token(conn, token)
        rows = conn.execute(
            select(TR.c.id, TR.c.idx, T.c.category, T.c.keypoint, P.c.sketch_kps_json, C.c.id.label("click_id"))
            .select_from(TR.join(T, T.c.id == TR.c.task_id).join(P, P.c.id == T.c.pair_id)
                         .outerjoin(C, C.c.trial_id == TR.c.id))
            .where(TR.c.session_id == sess.id).order_by(TR.c.idx)).all()
        base = f"/api/sessions/{token}/images"
        trials = [{"trial_id": r.id, "index": r.idx, "category": r.category, "keypoint": r.keypoint,
                   "sketch_url": f"{base}/{r.id}/sketch", "photo_url": f"{base}/{r.id}/photo",
                   "sketch_keypoint": json.loads(r.sketch_kps_json)[r.keypoint], "answered": r.click_id is not None}
                  for r in rows]
        answered = sum(t["answered"] for t in trials)
        next_index = next((t["index"] for t in trials if not t["answered"]), len(trials))
        return {"session_token": token, "participant": sess.participant, "status": self._status(sess, answered),
                "trials": trials, "next_index": next_index, "answered_count": answered, "total": len(trials),
                "expires_at": iso(sess.expires_at), "lease_seconds_left": max(0.0, sess.expires_at - self.clock())}

    def _status(self, sess, answered: int) -> str:
        if sess.status == "active" and self.clock() > sess.expires_at and answered < sess.n_trials:
            return "expired"
        return sess.status

    # ------------------------------------------------------------------ clicks
    def record_click(self, token: str, trial_id: int, x: float, y: float, rt_ms, client_id: str,
                     display: dict | None) -> tuple[int, dict]:
        """Store one click durably; returns (HTTP status, body). See docs/annotation.md."""
        try:
            with self._write_tx() as conn:
                return self._record_click(conn, token, trial_id, x, y, rt_ms, client_id, display)
        except (IntegrityError, _Conflict):
            # a concurrent duplicate (same client_id or same trial) won the race
            with self.read.connect() as conn:
                sess = self._session_by_token(conn, token)
                prev = conn.execute(select(C.c.trial_id, C.c.reply_json).where(
                    C.c.session_id == sess.id, C.c.client_id == client_id)).first()
                if prev is not None and prev.trial_id == trial_id:
                    return 200, json.loads(prev.reply_json)
            raise ApiError(409, f"trial {trial_id} is already answered", field="trial_id") from None

    def _record_click(self, conn, token, trial_id, x, y, rt_ms, client_id, display):
        # Few statements per click: it is the hot path (one transaction, ~6 round trips).
        now = self.clock()
        sess = self._session_by_token(conn, token)
        earlier = conn.execute(_Q_EARLIER, {"sid": sess.id, "cid": client_id, "tid": trial_id}).all()
        for prev in earlier:
            if prev.client_id == client_id:
                if prev.trial_id != trial_id:
                    raise ApiError(409, f"client_id {client_id!r} was already used for trial {prev.trial_id}; "
                                        f"use a new client_id for each click", field="client_id")
                return 200, json.loads(prev.reply_json)
        if earlier:
            raise ApiError(409, f"trial {trial_id} is already answered; a trial takes one click", field="trial_id")
        trial = conn.execute(_Q_TRIAL, {"tid": trial_id, "sid": sess.id}).first()
        if trial is None:
            raise ApiError(404, f"trial_id {trial_id} is not a trial of this session", field="trial_id")
        if sess.status == "expired" or (sess.status == "active" and now > sess.expires_at):
            n_answered = conn.execute(select(func.count()).select_from(C).where(C.c.session_id == sess.id)).scalar_one()
            raise ApiError(410, f"your reservation expired at {iso(sess.expires_at)}; the {n_answered} clicks "
                                f"you gave are kept, but this trial now belongs to someone else. Please return "
                                f"to Prolific.", answered_count=n_answered, status="expired")
        if trial.is_catch:
            self._lock(conn)  # a failed catch trial may flag the session and release its slots
        flagged = bool(sess.flagged)
        slot_index = None if (trial.is_catch or flagged) else trial.slot_index
        if slot_index is not None:
            res = conn.execute(_U_FILL, {"task": trial.task_id, "slot": slot_index, "sid": sess.id})
            if res.rowcount != 1:
                holder = conn.execute(select(SL.c.holder_session_id, SL.c.filled).where(
                    SL.c.task_id == trial.task_id, SL.c.slot_index == slot_index)).first()
                if holder is not None and holder.holder_session_id == sess.id and holder.filled:
                    raise _Conflict()  # a concurrent copy of this click committed first
                raise ApiError(410, "this trial's reservation lapsed and was given to someone else; "
                                    "your earlier clicks are kept", status="expired")
        n_answered, next_index = conn.execute(_Q_PROGRESS, {"tid": trial_id, "sid": sess.id}).one()
        reply = {"trial_id": trial_id, "stored": True,
                 "next_index": sess.n_trials if next_index is None else next_index,
                 "answered_count": n_answered + 1, "total": sess.n_trials}
        conn.execute(_I_CLICK, {
            "trial_id": trial_id, "session_id": sess.id, "task_id": trial.task_id, "slot_index": slot_index,
            "client_id": client_id, "x": x, "y": y, "rt_ms": rt_ms,
            "display_json": json.dumps(display) if display else None, "created_at": now, "excluded": flagged,
            "reply_json": json.dumps(reply)})
        if trial.is_catch:
            failed = math.hypot(x - trial.answer_x, y - trial.answer_y) > trial.tolerance_px
            if failed:
                n_failed = sess.catch_failed + 1
                conn.execute(update(S).where(S.c.id == sess.id).values(catch_failed=n_failed))
                if n_failed > self.config.catch_max_failures and not flagged:
                    self._flag(conn, sess.id)
        return 201, reply

    def _flag(self, conn, session_id: int):
        """Flag a session that failed its catch trials: its clicks stop counting (kept, marked
        ``excluded``) and all its slots go back to the pool."""
        conn.execute(update(S).where(S.c.id == session_id).values(flagged=True))
        conn.execute(update(C).where(C.c.session_id == session_id).values(slot_index=None, excluded=True))
        task_ids = conn.execute(update(SL).where(SL.c.holder_session_id == session_id)
                                .values(holder_session_id=None, filled=False).returning(SL.c.task_id)).scalars().all()
        self._add_free(conn, task_ids, +1)
        self._bump(conn)

    def complete(self, token: str) -> dict:
        now = self.clock()
        with self._write_tx() as conn:
            sess = self._session_by_token(conn, token)
            n_answered = conn.execute(select(func.count()).select_from(C).where(C.c.session_id == sess.id)).scalar_one()
            missing = sess.n_trials - n_answered
            if missing > 0:
                raise ApiError(409, f"{missing} trials missing: the server holds {n_answered} of "
                                    f"{sess.n_trials} clicks of this session", missing=missing,
                               status=self._status(sess, n_answered))
            if sess.status != "completed":
                conn.execute(update(S).where(S.c.id == sess.id).values(status="completed", completed_at=now))
        return {"completion_code": self.config.completion_code, "redirect_url": self.config.redirect_url}

    def trial_image(self, token: str, trial_id: int, which: str) -> Path:
        col = P.c.photo if which == "photo" else P.c.sketch
        with self.read.connect() as conn:
            sess = self._session_by_token(conn, token)
            rel = conn.execute(select(col).select_from(TR.join(T, T.c.id == TR.c.task_id).join(P, P.c.id == T.c.pair_id))
                               .where(TR.c.id == trial_id, TR.c.session_id == sess.id)).scalar_one_or_none()
        if rel is None:
            raise ApiError(404, f"trial_id {trial_id} is not a trial of this session", field="trial_id")
        return self._image(rel)

    # ------------------------------------------------------------------ admin
    def task_image(self, task_id: int, which: str) -> Path:
        col = P.c.photo if which == "photo" else P.c.sketch
        with self.read.connect() as conn:
            rel = conn.execute(select(col).select_from(T.join(P, P.c.id == T.c.pair_id))
                               .where(T.c.id == task_id)).scalar_one_or_none()
        if rel is None:
            raise ApiError(404, f"no task {task_id}", field="task_id")
        return self._image(rel)

    def progress(self) -> dict:
        self.release_expired()
        n = self.config.annotators_per_keypoint
        with self.read.connect() as conn:
            status = dict(conn.execute(select(S.c.status, func.count()).group_by(S.c.status)).all())
            started = sum(status.values())
            per_cat = conn.execute(select(T.c.category, func.count(), func.sum(func.cast(SL.c.filled, db.Integer)))
                                   .select_from(SL.join(T, T.c.id == SL.c.task_id))
                                   .group_by(T.c.category).order_by(T.c.category)).all()
            filled_per_task = select(T.c.id, func.count(C.c.id).label("k")).select_from(
                T.outerjoin(C, and_(C.c.task_id == T.c.id, C.c.slot_index.is_not(None)))).where(
                T.c.is_catch == False).group_by(T.c.id).subquery()  # noqa: E712
            hist = dict(conn.execute(select(filled_per_task.c.k, func.count()).group_by(filled_per_task.c.k)).all())
            rts = conn.execute(select(C.c.rt_ms).where(C.c.excluded == False, C.c.rt_ms.is_not(None))).scalars().all()  # noqa: E712
            flagged = conn.execute(select(func.count()).select_from(S).where(S.c.flagged == True)).scalar_one()  # noqa: E712
        completed, expired = status.get("completed", 0), status.get("expired", 0)
        filled = sum(int(f or 0) for _, _, f in per_cat)
        total = sum(int(t) for _, t, _ in per_cat)
        return {
            "sessions": {"started": started, "completed": completed, "expired": expired,
                         "active": status.get("active", 0), "flagged": flagged},
            "slots": {"filled": filled, "total": total},
            "per_category": [{"category": c, "filled": int(f or 0), "total": int(t)} for c, t, f in per_cat],
            "clicks_per_keypoint": {str(k): int(hist.get(k, 0)) for k in range(n + 1)},
            "median_trial_ms": float(np.median(rts)) if rts else None,
            "dropout_rate": expired / (completed + expired) if completed + expired else None,
        }

    def _click_rows(self, conn, *, include_all: bool = False, task_id: int | None = None):
        q = (select(C.c.id, C.c.task_id, S.c.participant, P.c.photo, P.c.sketch, T.c.keypoint, C.c.x, C.c.y,
                    C.c.rt_ms, C.c.created_at, C.c.display_json, C.c.excluded, T.c.is_catch, C.c.session_id)
             .select_from(C.join(S, S.c.id == C.c.session_id).join(T, T.c.id == C.c.task_id)
                          .join(P, P.c.id == T.c.pair_id)).order_by(C.c.id))
        if not include_all:
            q = q.where(C.c.excluded == False, T.c.is_catch == False)  # noqa: E712
        if task_id is not None:
            q = q.where(C.c.task_id == task_id)
        return conn.execute(q).all()

    def live(self, task_id: int | None = None) -> dict:
        with self.read.connect() as conn:
            if task_id is None:
                task_id = conn.execute(select(C.c.task_id).join(T, T.c.id == C.c.task_id).where(T.c.is_catch == False)  # noqa: E712
                                       .order_by(C.c.created_at.desc(), C.c.id.desc()).limit(1)).scalar_one_or_none()
                if task_id is None:
                    return {"task_id": None, "clicks": [], "centroid": None}
            task = conn.execute(select(T, P.c.photo, P.c.sketch, P.c.sketch_kps_json)
                                .select_from(T.join(P, P.c.id == T.c.pair_id)).where(T.c.id == task_id)).first()
            if task is None:
                raise ApiError(404, f"no task {task_id}", field="task_id")
            rows = self._click_rows(conn, task_id=task_id)
        pts = [{"x": r.x, "y": r.y, "participant": r.participant, "created_at": iso(r.created_at)} for r in rows]
        centroid = [float(np.mean([p["x"] for p in pts])), float(np.mean([p["y"] for p in pts]))] if pts else None
        return {"task_id": task_id, "photo": task.photo, "sketch": task.sketch, "category": task.category,
                "keypoint": task.keypoint, "sketch_keypoint": json.loads(task.sketch_kps_json)[task.keypoint],
                "clicks": pts, "centroid": centroid,
                "photo_url": f"/api/admin/images/{task_id}/photo", "sketch_url": f"/api/admin/images/{task_id}/sketch"}

    def clicks_frame(self, *, include_all: bool = False):
        """Raw clicks as a DataFrame with psc6k.formats.CLICK_COLUMNS (+ display, and with
        ``include_all`` the catch-trial and flagged clicks plus ``kind`` and ``excluded``)."""
        import pandas as pd

        with self.read.connect() as conn:
            rows = self._click_rows(conn, include_all=include_all)
        data = {"participant": [r.participant for r in rows], "photo": [r.photo for r in rows],
                "sketch": [r.sketch for r in rows], "keypoint": [int(r.keypoint) for r in rows],
                "x": [float(r.x) for r in rows], "y": [float(r.y) for r in rows],
                "rt_ms": [r.rt_ms for r in rows], "created_at": [iso(r.created_at) for r in rows],
                "display": [r.display_json or "" for r in rows]}
        if include_all:
            data["kind"] = ["catch" if r.is_catch else "regular" for r in rows]
            data["excluded"] = [int(bool(r.excluded)) for r in rows]
        return pd.DataFrame(data)

    def participants(self) -> list[dict]:
        """Per-session stats, with each participant's mean distance to the consensus (the
        centroid of the other participants' clicks on the same keypoint)."""
        import pandas as pd

        from psc6k.aggregate import leave_one_out_distances

        with self.read.connect() as conn:
            sessions = conn.execute(select(S).order_by(S.c.id)).all()
            counts = dict(conn.execute(select(C.c.session_id, func.count()).group_by(C.c.session_id)).all())
            rows = self._click_rows(conn)
        err: dict[int, list] = {}
        rts: dict[int, list] = {}
        if rows:
            frame = pd.DataFrame({"photo": [r.photo for r in rows], "sketch": [r.sketch for r in rows],
                                  "keypoint": [r.keypoint for r in rows], "x": [r.x for r in rows],
                                  "y": [r.y for r in rows]})
            dist = leave_one_out_distances(frame)
            for r, d in zip(rows, dist):
                if np.isfinite(d):
                    err.setdefault(r.session_id, []).append(float(d))
                if r.rt_ms is not None:
                    rts.setdefault(r.session_id, []).append(r.rt_ms)
        out = []
        for s in sessions:
            answered = counts.get(s.id, 0)
            e = err.get(s.id, [])
            out.append({"participant": s.participant, "prolific_pid": s.prolific_pid,
                        "status": self._status(s, answered), "flagged": bool(s.flagged),
                        "catch_failed": s.catch_failed, "answered": answered, "total": s.n_trials,
                        "mean_error_px": float(np.mean(e)) if e else None, "n_compared": len(e),
                        "median_rt_ms": float(np.median(rts[s.id])) if rts.get(s.id) else None,
                        "created_at": iso(s.created_at), "expires_at": iso(s.expires_at),
                        "completed_at": iso(s.completed_at)})
        return out

    def aggregate(self, n_sigma: float = 3.0):
        """Aggregate the counted clicks; returns (Annotations of complete pairs, ClickAggregate,
        report dict). Pairs with a keypoint left without a kept click are reported, not written."""
        from psc6k.aggregate import aggregate_clicks, human_agreement
        from psc6k.formats import Annotations

        clicks = self.clicks_frame()
        agg = aggregate_clicks(clicks, n_sigma=n_sigma)
        with self.read.connect() as conn:
            prs = conn.execute(select(P).where(P.c.id.in_(select(T.c.pair_id).where(T.c.is_catch == False)))  # noqa: E712
                               .order_by(P.c.id)).all()
        photo = [p.photo for p in prs]
        sketch = [p.sketch for p in prs]
        photo_kps = agg.photo_keypoints(photo, sketch)
        complete = np.isfinite(photo_kps).all(axis=(1, 2))
        idx = np.flatnonzero(complete)
        sketch_kps = np.array([json.loads(p.sketch_kps_json) for p in prs], dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 2)
        ann = Annotations.from_arrays([photo[i] for i in idx], [sketch[i] for i in idx], photo_kps[idx],
                                      sketch_kps[idx], categories=self.config.categories or None)
        report = agg.summary()
        report.update({"pairs_total": len(prs), "pairs_complete": int(complete.sum()),
                       "pairs_incomplete": [{"photo": photo[i], "sketch": sketch[i]} for i in np.flatnonzero(~complete)][:1000],
                       "human_agreement": human_agreement(clicks, kept=agg.kept) if len(clicks) else None})
        return ann, agg, json_safe(report)


class _Exists(Exception):
    pass


class _Conflict(Exception):
    """Another transaction stored this trial's click first (PostgreSQL row-lock race)."""
