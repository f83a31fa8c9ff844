"""examples/port_your_method.py (docs/port_your_method.md) runs on the bundled sample, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from psc6k.data import sample_path  # noqa: E402
from psc6k.formats import read_annotations  # noqa: E402
from psc6k.pck import evaluate  # noqa: E402
from psc6k.submission import load_submission  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "port_your_method.py"


def test_port_your_method_script_runs_on_the_sample(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "# psc6k doctor" in r.stdout and "ok: no convention fix" in r.stdout
    assert "# psc6k eval" in r.stdout and "per keypoint index" in r.stdout
    sub = load_submission(tmp_path / "submission.npz")
    res = evaluate(read_annotations(sample_path() / "test_pairs_ps.csv"), sub, n_bootstrap=0)
    assert f"{res.overall['pck@0.10']:12.2f}" in r.stdout  # the printed score is the submission's
    assert res.overall["pck@0.10"] > 20  # the toy method beats chance on the sample
