"""The HTML report: scores through psc6k.pck.evaluate, offline, only links to files it wrote."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from psc6k.pck import evaluate
from psc6k.report import CURVE_ALPHAS, choose_examples, score_submissions, write_report
from psc6k.submission import Submission, identity_flow, save_submission


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action") and value is not None:
                self.refs.append((tag, name, value))


def referenced_files(index: Path) -> list[str]:
    parser = _Links()
    parser.feed(index.read_text(encoding="utf-8"))
    return [v for _, _, v in parser.refs]


@pytest.fixture(scope="module")
def mini_report(tmp_path_factory):
    from tests.psc6k.test_baselines import make_mini_benchmark
    from tests.psc6k.test_consistency import _clicks_for

    from psc6k.baselines import run_baselines

    root = tmp_path_factory.mktemp("rep")
    ann = make_mini_benchmark(root, n_pairs=5)
    subs = list(run_baselines(["identity", "affine"], ann, root, progress=False).values())
    clicks = _clicks_for(list(zip(ann.photo, ann.sketch)), ann.photo_kps, np.random.default_rng(1))
    out = root / "report"
    index = write_report(ann, subs, root, out, clicks=clicks, n_examples=2, n_bootstrap=50)
    return ann, subs, out, index


def test_html_references_only_files_it_wrote(mini_report):
    ann, subs, out, index = mini_report
    refs = referenced_files(index)
    assert refs, "the report links its figures"
    for ref in refs:
        parsed = urlparse(ref)
        assert not parsed.scheme and not parsed.netloc, f"external reference {ref!r}"
        assert not ref.startswith("/") and ".." not in Path(ref).parts, f"not relative inside the report: {ref!r}"
        assert (out / ref).is_file(), f"{ref} is referenced but was not written"
    text = index.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "<script" not in text
    for needed in ("pck_curve.png", "per_category.png", "consistency.png", "examples/pair_01.png",
                   "examples/pair_02.png", "results.json"):
        assert needed in refs
        assert (out / needed).stat().st_size > 0
    for png in out.rglob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_leaderboard_numbers_come_from_evaluate(mini_report):
    ann, subs, out, index = mini_report
    results = json.loads((out / "results.json").read_text())
    by_name = {row["method"]: row for row in results["leaderboard"]}
    for sub in subs:
        ref = evaluate(ann, sub, n_bootstrap=50)
        row = by_name[sub.method]
        assert row["pck@0.05"] == ref.overall["pck@0.05"] and row["pck@0.10"] == ref.overall["pck@0.10"]
        assert row["pck@0.10_ci95"] == ref.ci95["pck@0.10"]
        curve = results["curve"][sub.method]
        assert len(curve) == len(CURVE_ALPHAS) == 20
        assert curve["pck@0.05"] == ref.overall["pck@0.05"]
        assert list(curve.values()) == sorted(curve.values())   # PCK never falls as alpha grows
    ranks = [row["method"] for row in results["leaderboard"]]
    assert ranks == ["baseline-affine", "baseline-identity"]        # affine ranks first
    html = index.read_text(encoding="utf-8")
    assert html.index("baseline-affine") < html.index("baseline-identity")
    assert f"{by_name['baseline-affine']['pck@0.10']:.2f}" in html
    assert "human agreement" in html


def test_ranking_and_unique_names(mini_report):
    ann, subs, *_ = mini_report
    n = len(ann)
    far = Submission("far", "keypoints", ann.photo, ann.sketch, np.full((n, 8, 2), 500.0), np.full((n, 8, 2), 500.0))
    same = Submission("baseline-identity", "flow", ann.photo, ann.sketch, identity_flow(n), identity_flow(n))
    scores = score_submissions(ann, [far, subs[0], same], n_bootstrap=0)
    names = [m.name for m in scores]
    assert names[-1] == "far"
    assert set(names) == {"far", "baseline-identity", "baseline-identity (2)"}


def test_choose_examples_spreads_categories(mini_report):
    ann, *_ = mini_report
    rows = choose_examples(ann, 3)
    assert len(rows) == 3 and len({ann.category[i] for i in rows}) == 3
    assert choose_examples(ann, 100) == sorted(set(choose_examples(ann, 100)))
    assert len(choose_examples(ann, 100)) == len(ann)


def test_cli_report(mini_report, tmp_path, capsys):
    from psc6k.cli import main
    from psc6k.formats import write_test_pairs_ps

    ann, subs, out, _ = mini_report
    root = out.parent
    paths = []
    for sub in subs:
        paths.append(str(save_submission(sub, tmp_path / f"{sub.method}.npz")))
    dest = tmp_path / "rep"
    assert main(["report", "--annotations", str(root / "test_pairs_ps.csv"), "--images", str(root), *paths,
                 "--out", str(dest), "--examples", "1", "--bootstrap", "20"]) == 0
    assert (dest / "index.html").is_file() and "index.html" in capsys.readouterr().out
    assert main(["report", "--annotations", str(root / "test_pairs_ps.csv"), "--images", str(root),
                 "--out", str(dest)]) == 2
    assert "at least one submission" in capsys.readouterr().err


def test_pairwise_table_comes_from_compare(mini_report):
    from psc6k.compare import compare

    ann, subs, out, index = mini_report
    results = json.loads((out / "results.json").read_text())
    rows = results["pairwise"]
    assert [(r["a"], r["b"]) for r in rows] == [("baseline-affine", "baseline-identity")]
    by_name = {s.method: s for s in subs}
    ref = compare(ann, by_name["baseline-affine"], by_name["baseline-identity"], n_bootstrap=50)
    for key in ("pck@0.05", "pck@0.10"):
        assert rows[0][f"{key}_delta"] == pytest.approx(ref.delta[key])
        assert rows[0][f"{key}_p"] == pytest.approx(ref.p_value[key])
        assert rows[0][f"{key}_ci95"] == pytest.approx(ref.ci95[key])
    html = index.read_text(encoding="utf-8")
    assert "Pairwise comparison" in html and f"{ref.delta['pck@0.10']:+.2f}" in html


def test_failure_gallery_shows_the_worst_pairs(mini_report):
    from psc6k.report import warp_photo_to_sketch, worst_pairs

    ann, subs, out, index = mini_report
    res = evaluate(ann, subs[0], n_bootstrap=0)
    rows = worst_pairs(res, 3)
    # naive: sort pairs by (PCK@0.10 ascending, mean error descending)
    err = [np.mean([res.errors[d][k].mean() for d in res.errors]) for k in range(len(res.ann_index))]
    naive = sorted(range(len(err)), key=lambda k: (res.per_pair_pck["pck@0.10"][k], -err[k]))[:3]
    assert rows == [int(res.ann_index[k]) for k in naive]
    html = index.read_text(encoding="utf-8")
    assert "Failure gallery" in html and "failures/method_01.png" in html
    assert (out / "failures" / "method_02.png").read_bytes()[:4] == b"\x89PNG"
    # the identity flow warps a photo onto itself; a flow pointing off the image gives white
    photo = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    np.testing.assert_array_equal(warp_photo_to_sketch(photo, identity_flow(1, 16)[0]), photo)
    assert (warp_photo_to_sketch(photo, np.full((4, 4, 2), 3.0)) == 255).all()
