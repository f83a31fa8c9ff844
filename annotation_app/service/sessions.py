"""Sessions: study entry (link key, one plan per Prolific id, resume), the session body the
page works from, and completion."""

from __future__ import annotations

import hmac
import json
import random
import secrets

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from psc6k.errors import ConflictError, PermissionDeniedError

from .. import db
from .leases import release_lapsed
from .planning import claim, plan_candidates
from .store import iso

T, P, S, TR, C = db.tasks, db.pairs, db.sessions, db.trials, db.clicks

# The statements of study entry, built once.
_Q_VERSION = select(db.study.c.plan_version)
_Q_PID = select(S.c.id).where(S.c.prolific_pid == bindparam("pid"))
_Q_SESSION_OF = (select(S.c.id, S.c.token, S.c.prolific_study_id, S.c.prolific_session_id)
                 .where(S.c.prolific_pid == bindparam("pid")))
_I_REFUSAL = insert(db.resume_refusals)
_I_SESSION = insert(S).returning(S.c.id)
_I_TRIALS = insert(TR)
_Q_BODY = (select(TR.c.id, TR.c.idx, TR.c.task_id, C.c.id.label("click_id"))
           .select_from(TR.outerjoin(C, C.c.trial_id == TR.c.id))
           .where(TR.c.session_id == bindparam("sid")).order_by(TR.c.idx))
_Q_TASK_INFO = (select(T.c.id, T.c.category, T.c.keypoint, P.c.sketch_kps_json)
                .select_from(T.join(P, P.c.id == T.c.pair_id)).where(T.c.id.in_(bindparam("ids", expanding=True))))
_Q_ANSWERED = select(func.count()).select_from(C).where(C.c.session_id == bindparam("sid"))
_U_COMPLETED = update(S).where(S.c.id == bindparam("sid")).values(status="completed", completed_at=bindparam("now"))


class _Exists(Exception):
    """The same Prolific id started a session meanwhile (a second tab)."""


def other_prolific_session() -> ConflictError:
    return ConflictError("this Prolific ID already has a session in this study, started from another Prolific "
                         "session (another SESSION_ID). To continue, open the study in the browser where you "
                         "started it, from the same Prolific link; otherwise please contact the researchers on "
                         "Prolific. Your earlier answers are kept.", reason="other_prolific_session",
                         field="session_id")


def study_full() -> ConflictError:
    return ConflictError("the study is full: every keypoint already has its annotators (or is reserved by "
                         "participants still working); please return the study on Prolific", reason="study_full")


class Sessions:
    def __init__(self, store):
        self.store = store
        # task id -> (category, keypoint, sketch keypoint [x, y]): fixed at init, so read once
        # per process (a page reload or resume then reads only the session's trials and clicks)
        self._task_info: dict[int, tuple[str, int, list]] = {}

    def check_link_key(self, given: str | None) -> None:
        """The study link's ``key``: without the right one no session starts (a study made
        before link keys existed asks for none)."""
        expected = self.store.config.link_key
        if expected and not hmac.compare_digest((given or "").encode(), expected.encode()):
            raise PermissionDeniedError("this study link is incomplete or wrong (its key= part is missing or "
                                        "does not match): open the study again from Prolific", field="link_key")

    def start(self, prolific_pid: str, study_id: str = "", session_id: str = "", link_key: str | None = None
              ) -> tuple[dict, bool]:
        """Start (or resume) the session of ``prolific_pid``; returns (body, created).

        The slots are always claimed exactly as if planned under the plan lock. On PostgreSQL
        the plan is read first *outside* the lock and used under it only if no slot was
        claimed or released since (``plan_version``), else recomputed there. On SQLite it is
        computed inside the write job (about 2 ms: planning reads a few rows per category,
        never every task): planning in a request thread while that process's writer holds the
        lock made the writer wait for the GIL at every statement (claims of 100 ms with
        clicks of every worker queued behind them). The claim is a *heavy* write job: on
        SQLite it gets a transaction of its own between the batches of clicks
        (:mod:`.group_commit`).
        """
        self.check_link_key(link_key)
        store = self.store
        existing = self._session_of(prolific_pid)
        if existing is not None:
            return self._resume(existing, study_id, session_id), False
        rng = random.Random(secrets.randbits(64))
        version = candidates = None
        if not store.is_sqlite:
            with store.read.connect() as conn:
                with conn.begin():  # the version is read first, then the plan
                    version = conn.execute(_Q_VERSION).scalar_one()
                    candidates = plan_candidates(conn, store.config, rng)
        token = secrets.token_urlsafe(24)
        new = {"token": token, "prolific_pid": prolific_pid, "participant": store.pseudonym(prolific_pid),
               "prolific_study_id": study_id, "prolific_session_id": session_id, "status": "active",
               "flagged": False, "catch_failed": 0, "completed_at": None}

        def claim_plan(conn):
            nonlocal candidates
            store.lock_plans(conn)
            if conn.execute(_Q_PID, {"pid": prolific_pid}).first() is not None:
                raise _Exists()
            now = store.clock()
            release_lapsed(store, conn, now)
            if candidates is None or conn.execute(_Q_VERSION).scalar_one() != version:
                candidates = plan_candidates(conn, store.config, rng)  # SQLite, or slots moved meanwhile
            if not candidates.slots:
                raise study_full()
            sid = conn.execute(_I_SESSION, {**new, "n_trials": candidates.n_trials, "created_at": now,
                                            "expires_at": now + store.config.lease_seconds}).scalar_one()
            plan = claim(store, conn, sid, candidates, rng)
            conn.execute(_I_TRIALS, [{"session_id": sid, "idx": i, **p} for i, p in enumerate(plan)])

        try:
            store.run_write(claim_plan, heavy=True)
        except (_Exists, IntegrityError):
            # the same PID raced in from a second tab: its session exists now; never a second plan
            existing = self._session_of(prolific_pid)
            if existing is None:
                raise
            return self._resume(existing, study_id, session_id), False
        return self.body(token), True

    def _session_of(self, prolific_pid: str):
        with self.store.read.connect() as conn:
            return conn.execute(_Q_SESSION_OF, {"pid": prolific_pid}).first()

    def _resume(self, existing, study_id: str, session_id: str) -> dict:
        """The body of ``existing`` when the caller has its Prolific triple (a reload, a second tab,
        another device on the same Prolific session); otherwise the attempt is recorded and
        refused with 409 (never the token: whoever knows a PID could answer its trials)."""
        if (existing.prolific_study_id, existing.prolific_session_id) != (study_id, session_id):
            refusal = {"session_id": existing.id, "prolific_study_id": study_id,
                       "prolific_session_id": session_id, "created_at": self.store.clock()}
            self.store.run_write(lambda conn: conn.execute(_I_REFUSAL, refusal))
            raise other_prolific_session()
        return self.body(existing.token)

    def body(self, token: str) -> dict:
        """The session as the page needs it (also the reply of ``POST /api/sessions``)."""
        store = self.store
        info = self._task_info
        with store.read.connect() as conn:
            sess = store.session_by_token(conn, token)
            rows = conn.execute(_Q_BODY, {"sid": sess.id}).all()
            missing = [r.task_id for r in rows if r.task_id not in info]
            if missing:
                for task_id, category, keypoint, kps_json in conn.execute(_Q_TASK_INFO, {"ids": missing}):
                    info[task_id] = (category, keypoint, json.loads(kps_json)[keypoint])
        base = f"/api/sessions/{token}/images"
        trials = []
        for trial_id, idx, task_id, click_id in rows:
            category, keypoint, sketch_keypoint = info[task_id]
            trials.append({"trial_id": trial_id, "index": idx, "category": category, "keypoint": keypoint,
                           "sketch_url": f"{base}/{trial_id}/sketch", "photo_url": f"{base}/{trial_id}/photo",
                           "sketch_keypoint": sketch_keypoint, "answered": click_id is not None})
        answered = sum(t["answered"] for t in trials)
        next_index = next((t["index"] for t in trials if not t["answered"]), len(trials))
        return {"session_token": token, "participant": sess.participant,
                "status": store.session_status(sess, answered), "trials": trials, "next_index": next_index,
                "answered_count": answered, "total": len(trials), "expires_at": iso(sess.expires_at),
                "lease_seconds_left": max(0.0, sess.expires_at - store.clock())}

    def complete(self, token: str) -> dict:
        """The completion code, only once the server holds every trial of the session."""
        store = self.store

        def mark_completed(conn):
            sess = store.session_by_token(conn, token)
            n_answered = conn.execute(_Q_ANSWERED, {"sid": sess.id}).scalar_one()
            missing = sess.n_trials - n_answered
            if missing > 0:
                raise ConflictError(f"{missing} trials missing: the server holds {n_answered} of {sess.n_trials} "
                                    f"clicks of this session", missing=missing,
                                    status=store.session_status(sess, n_answered))
            if sess.status != "completed":
                conn.execute(_U_COMPLETED, {"sid": sess.id, "now": store.clock()})

        store.run_write(mark_completed)  # on SQLite: shares the fsync of the clicks queued meanwhile
        return {"completion_code": store.config.completion_code, "redirect_url": store.config.redirect_url}
