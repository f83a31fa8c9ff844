"""The click path's statements on the DBAPI cursor (annotation_app/service/prepared.py) return
what SQLAlchemy's ``conn.execute`` returns, on SQLite and PostgreSQL, and a unique-constraint
failure is SQLAlchemy's ``IntegrityError`` as before."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from annotation_app import db
from annotation_app.config import StudyConfig
from annotation_app.service import StudyService
from annotation_app.service.prepared import Prepared
from annotation_app.study import init_study
from annotation_app.testing import make_study_files, postgres_test_url, reset_postgres

URLS = ["sqlite", "postgresql"]


@pytest.fixture(params=URLS)
def service(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/p.db"
    else:
        base = postgres_test_url()
        if base is None:
            pytest.skip("set PSC6K_TEST_POSTGRES_URL to run the PostgreSQL variant")
        url = reset_postgres(base)
    files = make_study_files(tmp_path, n_categories=3, photos_per_category=2)
    init_study(url, files["pairs"], files["images"], StudyConfig(trials_per_participant=3, link_key="prepared-test"),
               files["keypoints"], force=True)
    svc = StudyService(url)
    for i in range(2):
        svc.sessions.start(f"pid{i}", link_key="prepared-test")
    yield svc
    svc.close()


def test_rows_equal_sqlalchemys(service):
    T, S, TR = db.tasks, db.sessions, db.trials
    stmt = (select(S.c.id, S.c.status, S.c.flagged, TR.c.task_id, TR.c.slot_index, T.c.answer_x)
            .select_from(S.join(TR, TR.c.session_id == S.c.id).join(T, T.c.id == TR.c.task_id))
            .where(S.c.prolific_pid == bindparam("pid")).order_by(TR.c.idx))
    prepared = Prepared(stmt)
    with service.store.write_tx() as conn:
        for pid in ("pid0", "pid1", "nobody"):
            want = conn.execute(stmt, {"pid": pid}).all()
            cursor = prepared.execute(conn, {"pid": pid})
            got = [prepared._row._make(r) for r in cursor.fetchall()]
            assert [tuple(r) for r in got] == [tuple(r) for r in want]
            first = prepared.first(conn, {"pid": pid})
            assert (first is None) == (not want)
            if want:
                assert first.task_id == want[0].task_id and bool(first.flagged) == want[0].flagged


def test_values_written_into_the_statement_and_rowcount(service):
    SL = db.slots
    stmt = Prepared(update(SL).where(SL.c.holder_session_id == bindparam("sid"), SL.c.filled == False)  # noqa: E712
                    .values(filled=True))
    count = Prepared(select(func.count().label("n")).select_from(SL).where(SL.c.filled == True))  # noqa: E712
    with service.store.write_tx() as conn:
        sid = conn.execute(select(SL.c.holder_session_id).where(SL.c.holder_session_id.is_not(None)).limit(1)).scalar_one()
        held = conn.execute(select(func.count()).select_from(SL).where(SL.c.holder_session_id == sid)).scalar_one()
        assert held > 0
        assert stmt.rowcount(conn, {"sid": sid}) == held
        assert stmt.rowcount(conn, {"sid": sid}) == 0  # filled now
        assert count.one(conn, {}).n == held


def test_unique_violation_is_sqlalchemys_integrity_error(service):
    S = db.sessions
    with service.store.read.connect() as conn:
        row = conn.execute(select(S).limit(1)).mappings().one()
    dup = {k: v for k, v in row.items() if k != "id"}
    stmt = Prepared(insert(S), column_keys=list(dup))
    with pytest.raises(IntegrityError):
        with service.store.write_tx() as conn:
            stmt.rowcount(conn, dup)
