"""The report's provenance, per-keypoint PCK and small-sample honesty; compare's verdicts."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from psc6k import __version__
from psc6k.data import sample_path
from psc6k.formats import read_annotations
from psc6k.pck import SCORER_VERSION
from psc6k.protocols import PROTOCOLS
from psc6k.report import write_report
from psc6k.submission import Submission, identity_flow, load_submission

S = sample_path()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    ann = read_annotations(S / "test_pairs_ps.csv")
    gt = load_submission(S / "gt_flows.npz")
    ident = Submission("identity", "flow", gt.photo, gt.sketch, identity_flow(len(gt), 8), identity_flow(len(gt), 8))
    out = tmp_path_factory.mktemp("rep")
    write_report(ann, [gt, ident], S, out, n_examples=0, n_failures=0, n_bootstrap=50,
                 command=["psc6k", "report", "gt.npz", "identity.npz"])
    return ann, json.loads((out / "results.json").read_text()), (out / "index.html").read_text()


def test_results_json_carries_provenance(report):
    _, res, page = report
    prov = res["provenance"]
    assert prov["annotations_sha256"] == hashlib.sha256((S / "test_pairs_ps.csv").read_bytes()).hexdigest()
    assert prov["protocol"] == "psc6k" and prov["protocol_sha256"] == PROTOCOLS["psc6k"].sha256
    assert prov["command"] == "psc6k report gt.npz identity.npz"
    assert prov["psc6k_version"] == __version__ and prov["scorer_version"] == SCORER_VERSION
    assert prov["date"].endswith("Z") and prov["date"][:2] == "20"
    for key in ("annotations_sha256", "command", "date", "protocol_sha256"):
        assert f"<b>{key}</b>: <code>{prov[key]}</code>" in page
    assert all(m["provenance"]["annotations_sha256"] == prov["annotations_sha256"] for m in res["methods"])


def test_per_keypoint_in_results_and_page(report):
    _, res, page = report
    gt = res["methods"][0]
    assert gt["method"] == "ground_truth"
    assert gt["per_keypoint"]["sketch_to_photo"]["pck@0.10"] == [100.0] * 8
    ident = res["methods"][1]["per_keypoint"]
    assert len(ident["photo_to_sketch"]["pck@0.05"]) == 8
    # per-keypoint numbers average back to the direction's PCK
    assert np.mean(ident["photo_to_sketch"]["pck@0.10"]) == pytest.approx(
        res["methods"][1]["per_direction"]["photo_to_sketch"]["pck@0.10"])
    assert "<h2>Per keypoint</h2>" in page


def test_small_categories_are_never_called_significant(report):
    _, res, page = report
    row = res["pairwise"][0]
    assert row["categories_min_attainable_p"] == 0.125  # 4 pairs per category: 2 / 2**4
    assert row["categories_can_reach_significance"] is False
    assert row["pck@0.10_verdict"] == "A better"  # overall: 40 pairs, huge difference
    assert "exact sign-flip test can give no p below 0.125" in page
    assert "– (too few pairs)" in page


def test_compare_cli_states_the_smallest_attainable_p_and_verdict(tmp_path):
    gt = load_submission(S / "gt_flows.npz")
    from psc6k.submission import save_submission

    noisy = Submission("noisy", "flow", gt.photo, gt.sketch, gt.sketch_to_photo + 0.001, gt.photo_to_sketch)
    save_submission(noisy, tmp_path / "noisy.npz")
    r = subprocess.run([sys.executable, "-m", "psc6k", "compare", str(S / "gt_flows.npz"), str(tmp_path / "noisy.npz"),
                        "--annotations", str(S / "test_pairs_ps.csv"), "--bootstrap", "100"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "10 of 10 categories have too few pairs" in r.stdout and "4 pairs: p >= 0.125" in r.stdout
    verdict_line = next(line for line in r.stdout.splitlines() if line.startswith("verdict"))
    assert "better" not in verdict_line  # equal scores: no difference is called better
    out = json.loads(subprocess.run([sys.executable, "-m", "psc6k", "compare", str(S / "gt_flows.npz"),
                                     str(tmp_path / "noisy.npz"), "--annotations", str(S / "test_pairs_ps.csv"),
                                     "--bootstrap", "0", "--json"], capture_output=True, text=True, check=True).stdout)
    cat = next(iter(out["per_category"].values()))
    assert cat["min_attainable_p"] == 0.125 and cat["can_reach_significance"] is False
    assert out["provenance"]["protocol"] == "psc6k" and out["verdict"]["pck@0.10"] == "no significant difference"
