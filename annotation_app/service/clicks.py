"""Clicks: store one click durably before answering; retries with the same ``client_id`` get
the same body. The hot path: one transaction of four statements."""

from __future__ import annotations

import json

from sqlalchemy import and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from psc6k.errors import ConflictError, GoneError, NotFoundError
from psc6k.jsonsafe import strict_dumps

from .. import db
from .catch import record_catch_result
from .prepared import Prepared
from .store import iso, unknown_token

T, S, TR, C, SL = db.tasks, db.sessions, db.trials, db.clicks, db.slots

# The statements, built once and run on the DBAPI cursor (:mod:`.prepared`): constructing and
# executing SQLAlchemy expressions costs more CPU than running them on SQLite, and the click's
# statements run inside the writer lock that every other click waits for.
_TRIAL = TR.join(T, T.c.id == TR.c.task_id)
_Q_SESSION_TRIAL = Prepared(
    select(S.c.id, S.c.status, S.c.expires_at, S.c.flagged, S.c.catch_failed, S.c.n_trials,
           TR.c.task_id, TR.c.slot_index, TR.c.is_catch, T.c.answer_x, T.c.answer_y, T.c.tolerance_px)
    .select_from(S.outerjoin(_TRIAL, and_(TR.c.session_id == S.c.id, TR.c.id == bindparam("tid"))))
    .where(S.c.token == bindparam("token")))
_Q_EARLIER = select(C.c.trial_id, C.c.client_id, C.c.reply_json, C.c.x, C.c.y, C.c.rt_ms, C.c.display_json).where(
    C.c.session_id == bindparam("sid"), or_(C.c.client_id == bindparam("cid"), C.c.trial_id == bindparam("tid")))
_U_FILL = Prepared(update(SL).where(SL.c.task_id == bindparam("task"), SL.c.slot_index == bindparam("slot"),
                            SL.c.holder_session_id == bindparam("sid"), SL.c.filled == False)  # noqa: E712
           .values(filled=True))
_Q_PROGRESS = Prepared(select(func.count(C.c.id), func.min(case((and_(C.c.id.is_(None), TR.c.id != bindparam("tid")), TR.c.idx))))
               .select_from(TR.outerjoin(C, C.c.trial_id == TR.c.id)).where(TR.c.session_id == bindparam("sid")))
_Q_ANSWERED = Prepared(select(func.count().label("n")).select_from(C).where(C.c.session_id == bindparam("sid")))
_CLICK_COLUMNS = ("trial_id", "session_id", "task_id", "slot_index", "client_id", "x", "y", "rt_ms", "display_json",
                  "created_at", "excluded", "reply_json")
_I_CLICK = Prepared(insert(C), column_keys=_CLICK_COLUMNS)


def display_json(display: dict | None) -> str | None:
    """How a click's ``display`` is stored (also what a retry is compared with): strict JSON,
    a ``NaN`` the browser sent becomes ``null``."""
    return strict_dumps(display) if display else None


def changed_field(stored, content: tuple) -> str | None:
    """The first field of ``content`` = ``(x, y, rt_ms, display)`` that differs from the
    ``stored`` click (its ``x``, ``y``, ``rt_ms``, ``display_json``), or None for a true retry."""
    x, y, rt_ms, display = content
    for name, old, new in (("x", stored.x, x), ("y", stored.y, y), ("rt_ms", stored.rt_ms, rt_ms)):
        if (old is None) != (new is None) or (old is not None and float(old) != float(new)):
            return name
    if stored.display_json != display_json(display):
        return "display"
    return None


class _NotStored(Exception):
    """Leave the write transaction: the click cannot be stored as sent (see :meth:`Clicks._resolve`)."""

    def __init__(self, error: Exception):
        self.error = error


class Clicks:
    def __init__(self, store):
        self.store = store

    def record(self, token: str, trial_id: int, x: float, y: float, rt_ms: float | None, client_id: str,
               display: dict | None) -> tuple[dict, bool]:
        """Store one click durably; returns (reply, created). ``created`` is False for a retry
        of a stored click (same ``client_id`` and the same content), which gets the stored reply.

        Raises ``ConflictError`` (trial already answered, ``client_id`` used for another trial
        or with other content), ``GoneError`` (the lease lapsed), ``NotFoundError`` (token or
        trial unknown).
        """
        try:
            return self.store.run_write(self._job(token, trial_id, x, y, rt_ms, client_id, display)), True
        except (IntegrityError, _NotStored) as exc:
            lapsed = self._not_stored(exc)
        return self._resolve(token, trial_id, client_id, lapsed, (x, y, rt_ms, display))

    async def record_async(self, token: str, trial_id: int, x: float, y: float, rt_ms: float | None,
                           client_id: str, display: dict | None) -> tuple[dict, bool]:
        """:meth:`record` for an event loop: it waits for the shared commit without holding a
        thread, and never blocks the loop (the rare resolution reads run in a thread)."""
        import asyncio

        future = self.store.submit_write(self._job(token, trial_id, x, y, rt_ms, client_id, display))
        if future is None:
            return await asyncio.to_thread(self.record, token, trial_id, x, y, rt_ms, client_id, display)
        try:
            return await asyncio.wrap_future(future), True
        except (IntegrityError, _NotStored) as exc:
            lapsed = self._not_stored(exc)
        return await asyncio.to_thread(self._resolve, token, trial_id, client_id, lapsed, (x, y, rt_ms, display))

    def warm_up(self) -> None:
        """Compile the click path's statements and open its connections before the first
        participant waits for them (a restarted server is fast from its first click on)."""
        def probe(conn):
            _Q_SESSION_TRIAL.first(conn, {"token": "", "tid": 0})
            _Q_PROGRESS.one(conn, {"tid": 0, "sid": 0})
            _Q_ANSWERED.one(conn, {"sid": 0})
        self.store.run_write(probe)
        with self.store.read.connect() as conn:
            conn.execute(_Q_EARLIER, {"sid": 0, "cid": "", "tid": 0}).all()

    def _job(self, token, trial_id, x, y, rt_ms, client_id, display):
        stored_display = display_json(display)  # encoded here, outside the writer lock
        return lambda conn: self._store(conn, token, trial_id, x, y, rt_ms, client_id, stored_display)

    @staticmethod
    def _not_stored(exc: Exception) -> Exception | None:
        """A unique constraint (a concurrent duplicate, a reused client_id): resolve; a lapsed
        lease: resolve, unless this is a retry of a click stored before; anything else: raise."""
        if isinstance(exc, _NotStored):
            if not isinstance(exc.error, GoneError):
                raise exc.error from None
            return exc.error
        return None

    def _store(self, conn, token, trial_id, x, y, rt_ms, client_id, stored_display: str | None) -> dict:
        now = self.store.clock()
        row = _Q_SESSION_TRIAL.first(conn, {"token": token, "tid": trial_id})
        if row is None:
            raise _NotStored(unknown_token())
        if row.task_id is None:
            raise _NotStored(NotFoundError(f"trial_id {trial_id} is not a trial of this session", field="trial_id"))
        if row.status == "expired" or (row.status == "active" and now > row.expires_at):
            n = _Q_ANSWERED.one(conn, {"sid": row.id}).n
            raise _NotStored(GoneError(
                f"your reservation expired at {iso(row.expires_at)}; the {n} clicks you gave are kept, but "
                f"this trial now belongs to someone else. Please return to Prolific.",
                answered_count=n, status="expired"))
        if row.is_catch:
            self.store.lock_plans(conn)  # a failed catch trial may flag the session and release its slots
        flagged = bool(row.flagged)
        slot_index = None if (row.is_catch or flagged) else row.slot_index
        if slot_index is not None:
            filled = _U_FILL.rowcount(conn, {"task": row.task_id, "slot": slot_index, "sid": row.id})
            if filled != 1:  # answered already, or the slot went to someone else
                raise _NotStored(GoneError("this trial's reservation lapsed and was given to someone else; "
                                           "your earlier clicks are kept", status="expired"))
        n_answered, next_index = _Q_PROGRESS.one(conn, {"tid": trial_id, "sid": row.id})
        reply = {"trial_id": trial_id, "stored": True, "next_index": row.n_trials if next_index is None else next_index,
                 "answered_count": n_answered + 1, "total": row.n_trials}
        _I_CLICK.rowcount(conn, {
            "trial_id": trial_id, "session_id": row.id, "task_id": row.task_id, "slot_index": slot_index,
            "client_id": client_id, "x": x, "y": y, "rt_ms": rt_ms,
            "display_json": stored_display, "created_at": now, "excluded": flagged,
            "reply_json": json.dumps(reply)})
        if row.is_catch:
            record_catch_result(self.store, conn, row, x, y)
        return reply

    def _resolve(self, token: str, trial_id: int, client_id: str, lapsed: Exception | None,
                 content: tuple) -> tuple[dict, bool]:
        """Why a click was not stored: a retry of a stored click (its reply, 200), a second
        click on an answered trial or a reused ``client_id`` (409), else ``lapsed`` (410).
        ``content``: the click's ``(x, y, rt_ms, display)``; a retry must repeat it exactly."""
        with self.store.read.connect() as conn:
            sess = conn.execute(select(S.c.id).where(S.c.token == token)).first()
            if sess is None:
                raise unknown_token()
            earlier = conn.execute(_Q_EARLIER, {"sid": sess.id, "cid": client_id, "tid": trial_id}).all()
        for prev in earlier:
            if prev.client_id == client_id:
                if prev.trial_id != trial_id:
                    raise ConflictError(f"client_id {client_id!r} was already used for trial {prev.trial_id}; "
                                        f"use a new client_id for each click", field="client_id")
                changed = changed_field(prev, content)
                if changed is not None:
                    raise ConflictError(f"client_id {client_id!r} was already used for a click on trial {trial_id} "
                                        f"with another {changed}; a retry must resend the same click, a new "
                                        f"click needs a new client_id", field=changed)
                return json.loads(prev.reply_json), False
        if earlier:
            raise ConflictError(f"trial {trial_id} is already answered; a trial takes one click", field="trial_id")
        if lapsed is not None:
            raise lapsed
        raise ConflictError(f"trial {trial_id} is already answered", field="trial_id")
