"""psc6k demo: end to end on the bundled sample, output safety, and docs/demo.md's numbers.

The module runs the demo once with the defaults of ``psc6k demo`` (about 25 s): the same run
checks the pipeline and that the tables in docs/demo.md are what the command prints (the docs
stay true; ``scripts/regenerate_docs.py`` rewrites them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from psc6k.data import sample_path
from psc6k.demo import MARKER, prepare_out, run_demo
from psc6k.errors import Psc6kError
from psc6k.formats import read_annotations, read_clicks, read_keypoints_csv
from psc6k.inputs import file_sha256

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "psc6k-demo"
    # exactly what `psc6k demo` runs (its defaults), so the docs' tables can be checked against it
    result = run_demo(out, progress=False, log=None)
    return out, result


def test_demo_end_to_end(demo):
    out, result = demo
    assert (out / MARKER).is_file()
    ann = read_annotations(out / "annotations" / "test_pairs_ps.csv")
    ann_st = read_annotations(out / "annotations" / "test_pairs_st.csv")
    n = len(read_annotations(sample_path() / "test_pairs_ps.csv"))
    assert len(ann) == len(ann_st) == n == 40
    np.testing.assert_array_equal(ann.photo_kps, ann_st.photo_kps)
    # sketch keypoints are the ones built (keypoints.csv), the photo ones the click centroids
    kps = read_keypoints_csv(out / "annotations" / "keypoints.csv")
    np.testing.assert_allclose(np.stack([kps[s] for s in ann.sketch]), ann.sketch_kps)
    clicks = read_clicks(out / "annotations" / "clicks.csv")
    assert len(clicks) == n * 8 * 3
    assert clicks.groupby(["photo", "sketch", "keypoint"])["participant"].nunique().eq(3).all()
    from psc6k.aggregate import aggregate_clicks
    np.testing.assert_allclose(aggregate_clicks(clicks).photo_keypoints(ann.photo, ann.sketch), ann.photo_kps)
    # methods, scores, report
    methods = [r["method"] for r in result.leaderboard]
    assert sorted(methods) == ["baseline-affine", "baseline-dense", "baseline-identity"]
    for m in methods:
        assert (out / "submissions" / f"{m}.npz").is_file()
    assert result.report == out / "report" / "index.html" and result.report.is_file()
    saved = json.loads((out / "leaderboard.json").read_text())
    assert saved["leaderboard"] == result.leaderboard
    assert result.human_agreement["pck@0.10"] > 90
    assert result.timings["total"] > 0
    # the report's provenance names the annotation file it scored, by its bytes
    prov = json.loads((out / "report" / "results.json").read_text())["provenance"]
    assert prov["annotations_sha256"] == file_sha256(out / "annotations" / "test_pairs_ps.csv")
    assert prov["annotations"] == str(out / "annotations" / "test_pairs_ps.csv")


def test_demo_scores_match_psc6k_eval(demo):
    """The leaderboard equals what psc6k.pck.evaluate gives the saved submission."""
    from psc6k.pck import evaluate
    from psc6k.submission import load_submission

    out, result = demo
    ann = read_annotations(out / "annotations" / "test_pairs_ps.csv")
    for row in result.leaderboard:
        res = evaluate(ann, load_submission(out / "submissions" / f"{row['method']}.npz"), n_bootstrap=0)
        assert row["pck@0.10"] == pytest.approx(res.overall["pck@0.10"], abs=1e-4)


def _docs_blocks():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import regenerate_docs
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return regenerate_docs


def test_docs_demo_tables_are_what_psc6k_demo_prints(demo):
    """docs/demo.md's leaderboard and baseline tables equal a fresh run's (rerun
    scripts/regenerate_docs.py when this fails after a deliberate change)."""
    gen = _docs_blocks()
    out, result = demo
    text = (REPO / "docs" / "demo.md").read_text(encoding="utf-8")
    assert gen.read_block(text, "demo-table") == gen.demo_table_block(result.to_dict())
    assert gen.read_block(text, "baseline-table") == gen.baseline_table_block(out / "submissions", sample_path())


def test_docs_blocks_replace_only_between_markers():
    gen = _docs_blocks()
    text = "intro\n<!-- generated:t -->\nold\n<!-- /generated:t -->\nrest\n"
    new = gen.replace_block(text, "t", "a\nb")
    assert new == "intro\n<!-- generated:t -->\na\nb\n<!-- /generated:t -->\nrest\n"
    assert gen.read_block(new, "t") == "a\nb"
    assert gen.replace_block(gen.replace_block(text, "t", ""), "t", "x") == text.replace("old", "x")
    with pytest.raises(KeyError):
        gen.read_block(text, "other")


def test_refuses_to_clobber_other_folders(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(Psc6kError, match="not written by 'psc6k demo'"):
        prepare_out(foreign)
    assert (foreign / "thesis.tex").read_text() == "precious"
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(Psc6kError, match="not a folder"):
        prepare_out(afile)
    # a folder an earlier demo wrote is reused: its own outputs go, anything else stays
    ours = prepare_out(tmp_path / "demo")
    (ours / "report").mkdir()
    (ours / "report" / "old.png").write_text("x")
    (ours / "notes.txt").write_text("keep")
    prepare_out(ours)
    assert not (ours / "report").exists() and (ours / "notes.txt").read_text() == "keep"
    assert prepare_out(tmp_path / "empty").is_dir()


def test_cli_json_and_errors(tmp_path, capsys):
    from psc6k.cli import main

    out = tmp_path / "d"
    assert main(["demo", "--out", str(out), "--pairs", "3", "--examples", "0", "--json",
                 "--use-sample-clicks"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["leaderboard"]) == 3 and data["report"].endswith("index.html")
    prov = json.loads((out / "report" / "results.json").read_text())["provenance"]
    assert prov["command"] == f"psc6k demo --out {out} --pairs 3 --examples 0 --json --use-sample-clicks"
    assert prov["annotations_sha256"]
    assert main(["demo", "--out", str(tmp_path / "e"), "--checkpoint", str(tmp_path / "nope.pth")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "busy")]) == 2
    assert "not written by 'psc6k demo'" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_with_a_pscnet_checkpoint(tmp_path):
    pytest.importorskip("torch")
    from model_zoo.checkpoint import save_checkpoint
    from model_zoo.testing import tiny_model

    ckpt = save_checkpoint(tmp_path / "tiny.pth.tar", tiny_model())
    result = run_demo(tmp_path / "d", checkpoint=ckpt, max_pairs=2, n_examples=0, n_bootstrap=0,
                      use_sample_clicks=True, device="cpu", progress=False, log=None)
    methods = [r["method"] for r in result.leaderboard]
    assert "PSCNet-tiny" in methods and len(methods) == 4
    assert (tmp_path / "d" / "submissions" / "PSCNet-tiny.npz").is_file()  # kept under --out
