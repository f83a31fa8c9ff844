"""The COCOeval-shaped API (psc6k/pckeval.py): importable from the core namespace, from any repository."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

import psc6k
from psc6k.data import sample_path
from psc6k.formats import read_annotations
from psc6k.pck import evaluate
from psc6k.pckeval import PSC6KEval
from psc6k.submission import Submission, save_submission


def _noisy_submission(ann, seed=0):
    rng = np.random.default_rng(seed)
    flows = rng.uniform(-1, 1, (len(ann), 8, 8, 2))
    return Submission("noise", "flow", ann.photo, ann.sketch, flows, flows[:, ::-1])


def test_load_evaluate_summarize_equals_the_scorer(tmp_path, capsys):
    csv = sample_path() / "test_pairs_ps.csv"
    ann = read_annotations(csv)
    sub = _noisy_submission(ann)
    ev = PSC6KEval(csv, save_submission(sub, tmp_path / "s.npz"), n_bootstrap=0)
    res = ev.evaluate()
    assert ev.stats == res.overall == evaluate(ann, sub, n_bootstrap=0).overall
    text = ev.summarize()
    assert text in capsys.readouterr().out and "PCK@0.10" in text
    assert all(cat in text for cat in set(ann.category))


def test_namespace_import_is_lazy_and_the_old_path_re_exports():
    from evaluation.pckeval import PSC6KEval as old

    assert psc6k.PSC6KEval is PSC6KEval is old
    assert "PSC6KEval" in dir(psc6k)
    code = "import sys, psc6k; print('psc6k.pckeval' in sys.modules, 'pandas' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["False", "False"], r.stderr  # `import psc6k` stays cheap


def test_works_from_a_repository_with_its_own_evaluation_package(tmp_path):
    """A user's project with an ``evaluation/`` folder shadows ours: the core import still works."""
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "__init__.py").write_text("")
    ann = read_annotations(sample_path() / "test_pairs_ps.csv")
    npz = save_submission(_noisy_submission(ann), tmp_path / "s.npz")
    script = tmp_path / "score.py"
    script.write_text(textwrap.dedent(f"""
        import json, evaluation
        from psc6k import PSC6KEval
        ev = PSC6KEval({str(sample_path() / "test_pairs_ps.csv")!r}, {str(npz)!r}, n_bootstrap=0)
        print(json.dumps([evaluation.__file__, ev.evaluate().overall["pck@0.10"]]))
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    theirs, pck = json.loads(r.stdout.strip().splitlines()[-1])
    # the user's package is the one named `evaluation` there (else this test proves nothing)
    assert theirs == str(tmp_path / "evaluation" / "__init__.py")
    assert pck == evaluate(ann, _noisy_submission(ann), n_bootstrap=0).overall["pck@0.10"]
