"""`psc6k annotate init|serve` command line, study.toml, practice trials (SQLite; the service
itself runs on both databases in test_annotation_service.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from annotation_app.app import create_app
from annotation_app.settings import AnnotationSettings
from annotation_app.testing import make_study_files
from psc6k.cli import main
from psc6k.formats import Annotations, write_test_pairs_ps


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
    assert summary["pairs"] == 6 and summary["slots"] == 6 * 8 * 3 and summary["categories"] == 3
    assert summary["minimum_complete_sessions"] == 48  # 144 slots / 3 trials
    assert summary["redirect_url"].endswith(summary["completion_code"])
    assert init(files, db) == 2
    assert "already holds a study" in capsys.readouterr().err
    assert init(files, db, "--force") == 0


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


def test_config_practice_catch_and_texts(files, tmp_path):
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
photo = "{files['photo'][0]}"
sketch = "{files['sketch'][0]}"
keypoint = 1
answer = [10.0, 20.0]
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
                                     "sketch_keypoint": files["sketch_kps"][files["sketch"][0]][1].tolist(),
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
