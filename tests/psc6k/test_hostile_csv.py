"""Every CSV psc6k writes is inert in a spreadsheet (OWASP CSV injection), and legitimate files are
byte for byte what they were."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from psc6k.csvsafe import FORMULA_STARTS, safe_cell
from psc6k.formats import (Annotations, TrainPairs, clicks_to_csv_text, read_annotations, write_clicks,
                           write_keypoints_csv, write_pair_list, write_test_pairs_ps, write_test_pairs_st,
                           write_train_pairs_ps, write_train_pairs_st)

REPO = Path(__file__).resolve().parents[2]
PAYLOADS = ["=cmd|' /C calc'!A0", "+1+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0",
            "\t=1+1", "\r=1+1"]


def _cells(path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [c for row in csv.reader(fh) for c in row]


def _assert_inert(cells):
    live = [c for c in cells if c.startswith((*FORMULA_STARTS, "\n")) and not re.fullmatch(r"[-+0-9.eE;]+", c)]
    assert not live, live


@pytest.mark.parametrize("value, expected", [
    ("=1+1", "'=1+1"), ("+1", "+1"), ("-0.5", "-0.5"), ("-0.5;12.25;-3e-05", "-0.5;12.25;-3e-05"),
    ("-", "'-"), ("@x", "'@x"), ("\tx", "'\tx"), ("\rx", "'\nx"), ("a\rb", "a\nb"), ("a=b", "a=b"), ("", ""), (-0.5, -0.5), (3, 3),
    ("-1+cmd", "'-1+cmd"), ("1;=2", "1;=2"),
])
def test_safe_cell(value, expected):
    assert safe_cell(value) == expected


def _hostile_annotations():
    rng = np.random.default_rng(0)
    n = len(PAYLOADS)
    photo = [f"rendered_256x256/256x256/photo/tx_000100000000/airplane/{p}.jpg" for p in range(n)]
    photo[0] = PAYLOADS[0]
    sketch = [PAYLOADS[i] for i in range(n)]
    return photo, sketch, rng.uniform(-0.5, 255.5, (n, 8, 2)), rng.uniform(-0.5, 255.5, (n, 8, 2))


def test_pair_and_keypoint_writers_escape_formulas(tmp_path):
    photo, sketch, pk, sk = _hostile_annotations()
    ann = Annotations(photo, sketch, ["airplane"] * len(photo), np.ones(len(photo), np.int64), pk, sk,
                      ("airplane",), None)
    pairs = TrainPairs(photo, sketch, np.ones(len(photo), np.int64))
    writers = {
        "ps.csv": lambda p: write_test_pairs_ps(ann, p),
        "st.csv": lambda p: write_test_pairs_st(ann, p),
        "train_ps.csv": lambda p: write_train_pairs_ps(pairs, p),
        "train_st.csv": lambda p: write_train_pairs_st(pairs, p),
        "list.csv": lambda p: write_pair_list(pairs, p),
        "kps.csv": lambda p: write_keypoints_csv(dict(zip(sketch, sk)), p),
    }
    for name, write in writers.items():
        write(tmp_path / name)
        cells = _cells(tmp_path / name)
        _assert_inert(cells)
        assert "'" + PAYLOADS[0] in cells, name


def test_click_writers_escape_formulas(tmp_path):
    rows = [{"participant": p, "photo": "a/photo/b/airplane/x.jpg", "sketch": "a/sketch/b/airplane/x-1.png",
             "keypoint": 0, "x": -0.5, "y": 3.0, "rt_ms": 10, "created_at": "2026-01-01"} for p in PAYLOADS]
    write_clicks(rows, tmp_path / "clicks.csv")
    cells = _cells(tmp_path / "clicks.csv")
    _assert_inert(cells)
    assert "-0.5" in cells  # numbers stay numbers
    assert clicks_to_csv_text(rows) == (tmp_path / "clicks.csv").read_text(encoding="utf-8")


def test_consistency_csv_escapes_method_names(tmp_path):
    from psc6k.consistency import ConsistencyResult, write_consistency

    names = ["annotator 1", PAYLOADS[0], PAYLOADS[3]]
    res = ConsistencyResult(names, np.array([[0, -0.5, 1], [-0.5, 0, 2], [1, 2, 0]], float), np.ones((3, 3), int))
    paths = write_consistency(res, tmp_path)
    cells = _cells(paths["csv"])
    _assert_inert(cells)
    assert "-0.500000" in cells


def test_training_log_escapes_text(tmp_path):
    pytest.importorskip("torch")
    from model_zoo.train import MetricsWriter

    log = MetricsWriter(tmp_path)
    log.write("train", {"epoch": 1, "loss": -0.25, "note": PAYLOADS[0]})
    cells = _cells(tmp_path / "train_log.csv")
    _assert_inert(cells)
    assert "-0.25" in cells


def test_legitimate_psc6k_csvs_are_byte_identical(tmp_path):
    from psc6k.data import sample_path

    src = sample_path() / "test_pairs_ps.csv"
    ann = read_annotations(src)
    write_test_pairs_ps(ann, tmp_path / "test_pairs_ps.csv")
    assert (tmp_path / "test_pairs_ps.csv").read_bytes() == src.read_bytes()
    st = sample_path() / "test_pairs_st.csv"
    if st.is_file():
        write_test_pairs_st(ann, tmp_path / "test_pairs_st.csv")
        assert (tmp_path / "test_pairs_st.csv").read_bytes() == st.read_bytes()


def test_aggregate_escapes_paths_from_a_clicks_csv(tmp_path):
    """`psc6k aggregate` copies photo / sketch strings from a clicks CSV into the PSC6K CSVs."""
    from psc6k.cli import main
    from psc6k.data import sample_path

    root = tmp_path / "sample"
    shutil.copytree(sample_path(), root)
    clicks = (root / "clicks.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    first_photo = clicks[1].split(",")[1]
    text = "".join(clicks).replace(first_photo, PAYLOADS[0].replace("'", ""))
    (root / "clicks.csv").write_text(text, encoding="utf-8")
    out = tmp_path / "agg"
    rc = main(["aggregate", str(root / "clicks.csv"), "--keypoints", str(root / "keypoints.csv"), "--out", str(out)])
    assert rc == 0
    cells = _cells(out / "test_pairs_ps.csv")
    assert "'" + PAYLOADS[0].replace("'", "") in cells
    for name in ("test_pairs_ps.csv", "test_pairs_st.csv"):
        _assert_inert(_cells(out / name))


WRITER = re.compile(r"\.to_csv\(|csv\.writer\(|csv\.DictWriter\(|\.csv\"\)|text/csv")


def test_every_csv_writer_goes_through_the_helper():
    """A static guard: every module that writes CSV uses psc6k.csvsafe (or only psc6k.formats' writers)."""
    offenders = []
    for path in REPO.glob("**/*.py"):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith((".venv", "tests/", "benchmarks/")) or "site-packages" in rel:
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"\.to_csv\(|csv\.writer\(|csv\.DictWriter\(", text) and "safe_" not in text:
            offenders.append(rel)
    assert not offenders, offenders
