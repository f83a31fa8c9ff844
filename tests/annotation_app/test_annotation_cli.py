"""`psc6k annotate init|serve` command line, study.toml, practice trials (SQLite; the service
itself runs on both databases in test_annotation_service.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from annotation_app import db as study_db
from annotation_app.app import create_app
from annotation_app.settings import AnnotationSettings
from annotation_app.testing import make_study_files
from psc6k.cli import main
from psc6k.formats import Annotations, write_test_pairs_ps

T, P = study_db.tasks, study_db.pairs


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_study_files(tmp_path_factory.mktemp("cli"), n_categories=3, photos_per_category=2)


def init(files, db, *extra):
    return main(["annotate", "init", "--pairs", str(files["pairs"]), "--keypoints", str(files["keypoints"]),
                 "--images", str(files["images"]), "--db", db, *extra])


def test_init_prints_summary_and_refuses_to_overwrite(files, tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/s.db"
    assert init(files, db, "--json", "--trials-per-participant", "3") == 0
    summary = json.loads(capsys.readouterr().out)
    # 6 pairs; the 3 drawn for practice leave the study (a practice trial is never a counted task)
    assert summary["pairs"] == 3 and summary["slots"] == 3 * 8 * 3 and summary["categories"] == 3
    assert summary["practice_pairs_excluded"] == 3
    assert summary["minimum_complete_sessions"] == 24  # 72 slots / 3 trials
    assert summary["redirect_url"].endswith(summary["completion_code"])
    assert init(files, db) == 2
    assert "already holds a study" in capsys.readouterr().err
    assert init(files, db, "--force") == 0
    assert "3 pairs were drawn for practice and are not annotated" in capsys.readouterr().out


def test_init_errors_are_messages(files, tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/e.db"
    rc = main(["annotate", "init", "--pairs", str(files["pairs"]), "--keypoints", str(files["keypoints"]),
               "--images", str(tmp_path), "--db", db])
    assert rc == 2 and "missing under --images" in capsys.readouterr().err
    rc = main(["annotate", "init", "--pairs", str(files["pairs"]), "--images", str(files["images"]), "--db", db])
    assert rc == 2 and "--keypoints" in capsys.readouterr().err
    cfg = tmp_path / "bad.toml"
    cfg.write_text("lease_minutes = 'soon'\n")
    assert init(files, db, "--config", str(cfg)) == 2
    assert "lease_minutes" in capsys.readouterr().err
    cfg.write_text("[catch]\nper_session = 1\n")
    assert init(files, db, "--config", str(cfg)) == 2
    assert "catch.per_session" in capsys.readouterr().err
    assert main(["annotate", "serve", "--db", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert "no study" in capsys.readouterr().err


def _outside_pair(files, name: str) -> tuple[str, str]:
    """Copies of the first pair's images under another id: a pair outside the study."""
    import shutil

    photo, sketch = files["photo"][0], files["sketch"][0]
    pair = (photo.replace(".jpg", f"{name}.jpg"), sketch.replace(".png", f"{name}.png"))
    for src, dst in zip((photo, sketch), pair):
        shutil.copyfile(files["images"] / src, files["images"] / dst)
    return pair


def test_practice_is_never_a_counted_task(files, tmp_path, capsys):
    """A [[practice.items]] on a study pair (each of its keypoints is a task whose clicks count),
    or equal to a catch item, is refused at init; drawn practice pairs leave the study."""
    on_study = tmp_path / "on_study.toml"
    on_study.write_text(f'''[[practice.items]]
photo = "{files['photo'][0]}"
sketch = "{files['sketch'][0]}"
keypoint = 1
answer = [10.0, 20.0]
''')
    assert init(files, f"sqlite:///{tmp_path}/p1.db", "--config", str(on_study)) == 2
    err = capsys.readouterr().err
    assert "[[practice.items]] #1" in err and "is a pair of the study" in err and files["photo"][0] in err
    photo, sketch = _outside_pair(files, "_pc")
    as_catch = tmp_path / "as_catch.toml"
    item = f'''photo = "{photo}"
sketch = "{sketch}"
keypoint = 2
answer = [10.0, 20.0]
sketch_keypoint = [5.0, 6.0]
'''
    as_catch.write_text(f"[[practice.items]]\n{item}[catch]\nper_session = 1\n[[catch.items]]\n{item}")
    assert init(files, f"sqlite:///{tmp_path}/p2.db", "--config", str(as_catch)) == 2
    assert "the same trial is a [[catch.items]]" in capsys.readouterr().err
    # drawn practice: its pairs have no task at all
    db_url = f"sqlite:///{tmp_path}/p3.db"
    assert init(files, db_url, "--json") == 0
    with TestClient(create_app(AnnotationSettings(db_url=db_url))) as client:
        service = client.app.state.service
        practice = service.info.practice_items()
        with service.read.connect() as conn:
            counted = {(r.photo, r.sketch, r.keypoint) for r in conn.execute(
                select(P.c.photo, P.c.sketch, T.c.keypoint).select_from(T.join(P, P.c.id == T.c.pair_id))
                .where(T.c.is_catch == False))}  # noqa: E712
    assert len(practice) == 3 and len(counted) == 3 * 8
    assert not {(p["photo"], p["sketch"]) for p in practice} & {(c[0], c[1]) for c in counted}


def test_config_practice_catch_and_texts(files, tmp_path):
    practice_photo, practice_sketch = _outside_pair(files, "_pr")
    cfg = tmp_path / "study.toml"
    cfg.write_text(f'''
title = "My study"
consent_text = "Consent."
trials_per_participant = 3
lease_minutes = 30
completion_code = "CODE123"
link_key = "cfg-link-key"
[practice]
tolerance_px = 15.0
[[practice.items]]
photo = "{practice_photo}"
sketch = "{practice_sketch}"
keypoint = 1
answer = [10.0, 20.0]
sketch_keypoint = [12.5, 13.5]
[catch]
per_session = 1
[[catch.items]]
photo = "{files['photo'][1]}"
sketch = "{files['sketch'][1]}"
keypoint = 4
answer = [30.0, 40.0]
''')
    db = f"sqlite:///{tmp_path}/c.db"
    assert init(files, db, "--config", str(cfg)) == 0
    with TestClient(create_app(AnnotationSettings(db_url=db, admin_token="t" * 12))) as client:
        info = client.get("/api/study").json()
        assert info["title"] == "My study" and info["consent_text"] == "Consent." and info["lease_minutes"] == 30
        assert info["practice"] == [{"practice_id": 0, "sketch_url": "/api/study/practice/0/sketch",
                                     "photo_url": "/api/study/practice/0/photo",
                                     "sketch_keypoint": [12.5, 13.5],
                                     "answer": [10.0, 20.0], "tolerance_px": 15.0}]
        body = client.post("/api/sessions", json={"prolific_pid": "abc", "link_key": "cfg-link-key"}).json()
        assert body["total"] == 4  # 3 regular + 1 catch
        for t in body["trials"]:
            assert client.post(f"/api/sessions/{body['session_token']}/clicks",
                               json={"trial_id": t["trial_id"], "x": 30, "y": 40, "client_id": str(t["trial_id"])}).status_code == 201
        done = client.post(f"/api/sessions/{body['session_token']}/complete").json()
        assert done == {"completion_code": "CODE123",
                        "redirect_url": "https://app.prolific.com/submissions/complete?cc=CODE123"}


def test_pairs_with_known_answers_need_no_keypoints(files, tmp_path):
    rng = np.random.default_rng(1)
    n = len(files["photo"])
    photo_kps = rng.uniform(0, 255, (n, 8, 2))
    sketch_kps = np.stack([files["sketch_kps"][s] for s in files["sketch"]])
    ps = tmp_path / "test_pairs_ps.csv"
    write_test_pairs_ps(Annotations.from_arrays(files["photo"], files["sketch"], photo_kps, sketch_kps), ps)
    db = f"sqlite:///{tmp_path}/k.db"
    rc = main(["annotate", "init", "--pairs", str(ps), "--images", str(files["images"]), "--db", db])
    assert rc == 0
    with TestClient(create_app(AnnotationSettings(db_url=db))) as client:
        practice = client.get("/api/study").json()["practice"]
    assert len(practice) == 3 and all(p["answer"] is not None and p["tolerance_px"] == 25.6 for p in practice)
    # each practice answer is the known photo keypoint of its pair
    known = {tuple(np.round(k, 6)) for k in photo_kps.reshape(-1, 2)}
    assert all(tuple(np.round(p["answer"], 6)) in known for p in practice)


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["annotate", "serve", "--help"])
    assert exc.value.code == 0 and "PSC6K_ADMIN_TOKEN" in capsys.readouterr().out
