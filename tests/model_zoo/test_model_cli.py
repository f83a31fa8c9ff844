"""`psc6k predict` and `psc6k train` end to end on tiny data, and their user-facing errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from model_zoo.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from model_zoo.testing import make_tiny_tree, tiny_model, zero_residuals  # noqa: E402
from psc6k.cli import main  # noqa: E402
from psc6k.formats import Annotations, TrainPairs, write_test_pairs_ps, write_train_pairs_ps  # noqa: E402
from psc6k.pck import evaluate  # noqa: E402
from psc6k.submission import Submission, identity_flow, load_submission  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture()
def tiny_tree(tmp_path):
    """A Sketchy-shaped tree with 4 annotated pairs (64 px images) and its CSVs."""
    root = tmp_path / "sketchy"
    photos, sketches = make_tiny_tree(root, n_pairs=4, size=64)
    rng = np.random.default_rng(0)
    photo_kps = rng.uniform(20, 235, (4, 8, 2))
    # near the photo keypoints: the identity flow gets some right at alpha 0.10, fewer at 0.05
    sketch_kps = np.clip(photo_kps + rng.normal(0, 18, (4, 8, 2)), 0, 255)
    ann = Annotations.from_arrays(photos, sketches, photo_kps, sketch_kps)
    ann_path = tmp_path / "test_pairs_ps.csv"
    write_test_pairs_ps(ann, ann_path)
    train_path = tmp_path / "train_pairs_ps.csv"
    write_train_pairs_ps(TrainPairs.from_paths(photos, sketches), train_path)
    return root, ann_path, train_path, ann


def test_predict_zero_residual_model_scores_like_identity(tmp_path, tiny_tree, capsys):
    root, ann_path, _, ann = tiny_tree
    ckpt = save_checkpoint(tmp_path / "zero.pth.tar", zero_residuals(tiny_model()))
    out = tmp_path / "sub.npz"
    status = main(["predict", "--checkpoint", str(ckpt), "--annotations", str(ann_path), "--images", str(root),
                   "--out", str(out), "--device", "cpu", "--batch-size", "3", "--workers", "0", "--image-size", "64",
                   "--no-progress", "--json"])
    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pairs"] == 4
    sub = load_submission(out)
    assert sub.kind == "flow" and sub.photo == ann.photo and sub.sketch == ann.sketch
    np.testing.assert_allclose(sub.sketch_to_photo, identity_flow(4, 8), atol=1e-6)

    assert main(["eval", str(out), "--annotations", str(ann_path), "--json", "--bootstrap", "0"]) == 0
    scored = json.loads(capsys.readouterr().out)
    ident = identity_flow(4, 16)
    expected = evaluate(ann, Submission("identity", "flow", ann.photo, ann.sketch, ident, ident.copy()), n_bootstrap=0)
    assert scored["overall"] == pytest.approx(expected.overall)
    for direction, scores in expected.per_direction.items():
        assert scored["per_direction"][direction] == pytest.approx(scores)
    assert 0 < scored["overall"]["pck@0.10"] < 100


def test_predict_missing_image_is_named(tmp_path, tiny_tree, capsys):
    root, ann_path, _, ann = tiny_tree
    (root / ann.sketch[2]).unlink()
    ckpt = save_checkpoint(tmp_path / "m.pth.tar", tiny_model())
    status = main(["predict", "-c", str(ckpt), "-a", str(ann_path), "-i", str(root), "-o", str(tmp_path / "s.npz"),
                   "--device", "cpu", "--workers", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2
    assert ann.sketch[2] in err and "not found" in err and "pair 3" in err
    assert "Traceback" not in err


def test_worker_errors_lose_their_traceback():
    from model_zoo.data import ImageError, unwrap_worker_error

    wrapped = ImageError("Caught ImageError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                         "last):\n  File \"x.py\", line 1\nmodel_zoo.data.ImageError: cannot read image 'a.png': bad")
    assert str(unwrap_worker_error(wrapped)) == "cannot read image 'a.png': bad"


def test_predict_wrong_checkpoint_and_missing_cuda(tmp_path, tiny_tree, capsys):
    root, ann_path, _, _ = tiny_tree
    bad = tmp_path / "bad.pth.tar"
    torch.save({"model": 1}, bad)
    args = ["-a", str(ann_path), "-i", str(root), "-o", str(tmp_path / "s.npz"), "--workers", "0", "--no-progress"]
    assert main(["predict", "-c", str(bad), "--device", "cpu", *args]) == 2
    assert "not a PSCNet checkpoint" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["predict", "-c", str(bad), "--device", "cuda", *args]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_train_estimator_writes_metrics_checkpoint_and_resumes(tmp_path, tiny_tree, capsys):
    root, ann_path, train_path, _ = tiny_tree
    out = tmp_path / "run"
    model_json = json.dumps({"width": 8, "moco_queue": 64, "moco_dim": 16, "feat_size": 8,
                             "block_sizes": [2, 4, 8], "flow_size": 8})
    common = ["--images", str(root), "--train-pairs", str(train_path), "--val-annotations", str(ann_path),
              "--batch-size", "4", "--image-size", "64", "--device", "cpu", "--workers", "0", "--log-every", "1",
              "--no-progress", "--json"]
    assert main(["train", "estimator", "--out", str(out), "--model-json", model_json, "--epochs", "2",
                 "--max-steps", "1", *common]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["step"] == 1 and "pck@0.10" in first and "identity_pck@0.10" in first
    for name in ("metrics.jsonl", "train_log.csv", "eval_log.csv", "learning_curve.png", "checkpoint_last.pth.tar"):
        assert (out / name).is_file(), name
    model, ckpt = load_checkpoint(out / "checkpoint_last.pth.tar", return_checkpoint=True)
    assert model.config.feat_size == 8 and ckpt["step"] == 1 and ckpt["config"]["train"]["task"] == "estimator"

    # resume continues the step count and appends to the same logs
    assert main(["train", "estimator", "--out", str(out), "--resume", str(out / "checkpoint_last.pth.tar"),
                 "--epochs", "2", "--max-steps", "2", *common]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["step"] == 2
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == [1, 2]


def test_train_encoder_runs(tmp_path, tiny_tree, capsys):
    root, _, train_path, _ = tiny_tree
    out = tmp_path / "enc"
    assert main(["train", "encoder", "--images", str(root), "--train-pairs", str(train_path), "--out", str(out),
                 "--model-json", json.dumps({"width": 8, "moco_queue": 64, "moco_dim": 16, "feat_size": 8,
                                             "block_sizes": [2, 4, 8], "flow_size": 8}),
                 "--batch-size", "4", "--image-size", "64", "--max-steps", "2", "--device", "cpu", "--workers", "0",
                 "--log-every", "1", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]
    assert all(np.isfinite(r["moco"]) for r in rows if r["kind"] == "train")


def test_train_user_errors(tmp_path, tiny_tree, capsys):
    root, _, train_path, _ = tiny_tree
    base = ["train", "estimator", "--images", str(root), "--train-pairs", str(train_path), "--out", str(tmp_path / "r"),
            "--device", "cpu", "--workers", "0", "--no-progress"]
    assert main([*base, "--batch-size", "1"]) == 2
    # the library names the parameter (`batch_size`); the CLI may translate it to --batch-size
    assert any(name in capsys.readouterr().err for name in ("batch_size", "--batch-size"))
    assert main([*base, "--model-json", "{not json"]) == 2
    assert "--model-json" in capsys.readouterr().err
    assert main([*base, "--batch-size", "64"]) == 2  # 8 images with flips < one batch
    assert "fewer than one batch" in capsys.readouterr().err


def test_registry_and_package_import_without_torch():
    code = ("import sys, model_zoo, model_zoo.registry as r; assert 'torch' not in sys.modules; "
            "print(r.MODELS['pscnet_resnet18']['paper_pck']['pck@0.10'], r.MODELS['pscnet_resnet101']['checkpoint'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["83.22", "psc_resnet101.pth.tar"]
