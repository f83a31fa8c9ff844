"""Every ``psc6k`` command, every path argument, every way a new user gets a path wrong.

Each path argument gets a directory, a missing file, an empty file, a truncated file and a 2 GB
sparse file (or, for a folder argument, a missing folder, an empty file and the sparse file), the
other arguments being valid. The answer must be status 2 and one clean line (a few hundred
characters at most) naming the file — never a traceback, never an "internal error", never the
whole 2 GB read. Commands run in-process through ``psc6k.cli.main``; a few run as real
subprocesses too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from psc6k.cli import main
from psc6k.data import sample_path

SPARSE_BYTES = 2 * 1024**3
S = sample_path()
CSV = S / "test_pairs_ps.csv"
GT = S / "gt_flows.npz"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_cli")
    ckpt = None
    try:
        from model_zoo.checkpoint import save_checkpoint
        from model_zoo.testing import tiny_model

        ckpt = save_checkpoint(root / "tiny.pth.tar", tiny_model())
    except ImportError:
        pass
    return {"root": root, "ckpt": ckpt}


def _variant(root: Path, kind: str, like: Path | None, suffix: str) -> Path:
    """A bad path of the given kind, named so that its name appears in the message."""
    path = root / f"bad-{kind}{suffix}"
    if path.exists() or path.is_symlink():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if kind == "dir":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = like.read_bytes() if like is not None and like.is_file() else b'{"a": [1, 2'
        path.write_bytes(data[: max(1, len(data) * 2 // 5)])
    elif kind == "sparse":
        with open(path, "wb") as fh:
            fh.truncate(SPARSE_BYTES)
    return path


FILE_KINDS = ("dir", "missing", "empty", "truncated", "sparse")
DIR_KINDS = ("missing", "empty", "sparse")


def _cases():
    """(id, argv with "{X}" for the bad path, file-like original or None, suffix, kinds)."""
    db = "{R}/study.sqlite"
    out = "{R}/out"
    cases = [
        ("eval submission", ["eval", "{X}", "-a", CSV], GT, ".npz", FILE_KINDS),
        ("eval -a", ["eval", GT, "-a", "{X}"], CSV, ".csv", FILE_KINDS),
        ("build-pairs root", ["build-pairs", "{X}", "--out", out], None, "", DIR_KINDS),
        ("build-pairs --testset", ["build-pairs", S, "--out", out, "--testset", "{X}"], S / "info/testset.txt", ".txt",
         ("dir", "missing", "empty", "sparse")),  # a truncated list is a shorter list
        ("build-keypoints input", ["build-keypoints", "{X}", "--out", "{R}/kp.csv", "--images", S], CSV, ".csv",
         ("missing", "empty", "truncated", "sparse")),
        ("build-keypoints --images", ["build-keypoints", CSV, "--out", "{R}/kp.csv", "--images", "{X}"], None, "",
         DIR_KINDS),
        ("aggregate clicks", ["aggregate", "{X}", "--keypoints", S / "keypoints.csv", "--out", out], S / "clicks.csv",
         ".csv", FILE_KINDS),
        ("aggregate --keypoints", ["aggregate", S / "clicks.csv", "--keypoints", "{X}", "--out", out],
         S / "keypoints.csv", ".csv", FILE_KINDS),
        ("aggregate --template", ["aggregate", S / "clicks.csv", "--template", "{X}", "--out", out], CSV, ".csv",
         FILE_KINDS),
        ("aggregate --pairs", ["aggregate", S / "clicks.csv", "--keypoints", S / "keypoints.csv", "--pairs", "{X}",
                               "--out", out], CSV, ".csv", FILE_KINDS),
        ("annotate init --pairs", ["annotate", "init", "--pairs", "{X}", "--images", S, "--db", db], CSV, ".csv",
         FILE_KINDS),
        ("annotate init --keypoints", ["annotate", "init", "--pairs", CSV, "--keypoints", "{X}", "--images", S,
                                       "--db", db], S / "keypoints.csv", ".csv", FILE_KINDS),
        ("annotate init --images", ["annotate", "init", "--pairs", CSV, "--images", "{X}", "--db", db], None, "",
         DIR_KINDS),
        ("annotate init --config", ["annotate", "init", "--pairs", CSV, "--images", S, "--db", db, "--config", "{X}"],
         None, ".toml", ("dir", "missing", "truncated", "sparse")),  # an empty study.toml means all defaults
        ("annotate init --db", ["annotate", "init", "--pairs", CSV, "--images", S, "--db", "{X}"], None, ".sqlite",
         ("dir", "truncated", "sparse")),
        ("annotate serve --db", ["annotate", "serve", "--db", "{X}"], None, ".sqlite",
         ("dir", "missing", "empty", "truncated", "sparse")),
        ("serve -a", ["serve", "-a", "{X}", "--db", f"sqlite:///{db}"], CSV, ".csv", FILE_KINDS),
        ("serve --model-scores", ["serve", "-a", CSV, "--db", "sqlite:///{R}/lb.sqlite", "--model-scores", "{X}"],
         None, ".json", FILE_KINDS),
        ("serve token --db", ["serve", "token", "list", "--db", "sqlite:///{X}"], None, ".sqlite",
         ("dir", "truncated", "sparse")),
        ("baseline -a", ["baseline", "affine", "-a", "{X}", "-o", "{R}/b.npz"], CSV, ".csv", FILE_KINDS),
        ("baseline -i", ["baseline", "affine", "-a", CSV, "-i", "{X}", "-o", "{R}/b.npz"], None, "", DIR_KINDS),
        ("consistency submissions", ["consistency", "{X}", "-c", S / "clicks.csv", "-a", CSV, "-o", out], GT, ".npz",
         FILE_KINDS),
        ("consistency -c", ["consistency", "-c", "{X}", "-a", CSV, "-o", out], S / "clicks.csv", ".csv", FILE_KINDS),
        ("consistency -a", ["consistency", "-c", S / "clicks.csv", "-a", "{X}", "-o", out], CSV, ".csv", FILE_KINDS),
        ("report submissions", ["report", "{X}", "-a", CSV, "-o", out, "--no-progress"], GT, ".npz", FILE_KINDS),
        ("report -a", ["report", GT, "-a", "{X}", "-o", out, "--no-progress"], CSV, ".csv", FILE_KINDS),
        ("report -i", ["report", GT, "-a", CSV, "-i", "{X}", "-o", out, "--no-progress"], None, "", DIR_KINDS),
        ("report --clicks", ["report", GT, "-a", CSV, "--clicks", "{X}", "-o", out, "--no-progress"],
         S / "clicks.csv", ".csv", FILE_KINDS),
        ("demo --sample", ["demo", "--out", out, "--sample", "{X}", "--no-progress"], None, "", DIR_KINDS),
        ("demo --checkpoint", ["demo", "--out", out, "--checkpoint", "{X}", "--no-progress"], "CKPT", ".pth.tar",
         FILE_KINDS),
        ("predict -c", ["predict", "-c", "{X}", "-a", CSV, "-i", S, "-o", "{R}/p.npz", "--no-progress"], "CKPT",
         ".pth.tar", FILE_KINDS),
        ("predict -a", ["predict", "-c", "CKPT", "-a", "{X}", "-i", S, "-o", "{R}/p.npz", "--no-progress"], CSV, ".csv",
         FILE_KINDS),
        ("predict -i", ["predict", "-c", "CKPT", "-a", CSV, "-i", "{X}", "-o", "{R}/p.npz", "--no-progress"], None, "",
         DIR_KINDS),
        ("train --train-pairs", ["train", "estimator", "-i", S, "--train-pairs", "{X}", "-o", out, "--max-steps", "1",
                                 "--no-progress", "--workers", "0"], S / "train_pairs_ps.csv", ".csv", FILE_KINDS),
        ("train -i", ["train", "estimator", "-i", "{X}", "--train-pairs", S / "train_pairs_ps.csv", "-o", out,
                      "--max-steps", "1", "--no-progress", "--workers", "0"], None, "", DIR_KINDS),
        ("train --val-annotations", ["train", "estimator", "-i", S, "--train-pairs", S / "train_pairs_ps.csv", "-o",
                                     out, "--val-annotations", "{X}", "--max-steps", "1", "--no-progress",
                                     "--workers", "0"], CSV, ".csv", FILE_KINDS),
        ("train --init", ["train", "estimator", "-i", S, "--train-pairs", S / "train_pairs_ps.csv", "-o", out,
                          "--init", "{X}", "--max-steps", "1", "--no-progress", "--workers", "0"], "CKPT", ".pth.tar",
         FILE_KINDS),
        ("train --resume", ["train", "estimator", "-i", S, "--train-pairs", S / "train_pairs_ps.csv", "-o", out,
                            "--resume", "{X}", "--max-steps", "1", "--no-progress", "--workers", "0"], "CKPT",
         ".pth.tar", FILE_KINDS),
    ]
    for cid, argv, like, suffix, kinds in cases:
        for kind in kinds:
            yield pytest.param(argv, like, suffix, kind, id=f"{cid} <- {kind}")


def _argv(template, bad: Path, root: Path, ckpt) -> list[str]:
    out = []
    for a in template:
        a = str(a)
        if a == "CKPT":
            a = str(ckpt)
        out.append(a.replace("{X}", str(bad)).replace("{R}", str(root)))
    return out


def _check_one_line(rc: int, err: str, bad: Path, argv):
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines, f"no message for {argv}"
    last = lines[-1]
    assert rc == 2, f"status {rc}: {err[-2000:]}"
    assert last.startswith("psc6k ") and ": error: " in last or "needs the Python package" in last, last
    assert "internal error" not in last, last
    assert len(last) <= 600, last
    assert bad.name in last, f"the message does not name {bad.name}: {last}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("template, like, suffix, kind", list(_cases()))
def test_every_command_refuses_bad_paths_in_one_line(work, capsys, template, like, suffix, kind):
    if "CKPT" in [str(a) for a in template] or like == "CKPT":
        if work["ckpt"] is None:
            pytest.skip("needs torch")
        like = work["ckpt"] if like == "CKPT" else like
    root = work["root"] / kind
    root.mkdir(exist_ok=True)
    for leftover in ("out", "study.sqlite", "lb.sqlite", "kp.csv", "b.npz", "p.npz"):
        p = root / leftover
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    bad = _variant(root, kind, like, suffix)
    argv = _argv(template, bad, root, work["ckpt"])
    capsys.readouterr()
    with PeakRSS() as peak:
        rc = main(argv)
    err = capsys.readouterr().err
    _check_one_line(rc, err, bad, argv)
    if kind == "sparse":  # refused without reading the 2 GB
        assert peak.grew < 512 * 1024**2, f"memory grew by {peak.grew / 1e6:.0f} MB: the 2 GB file was read"


class PeakRSS:
    """Largest growth of this process's resident memory while the block runs (sampled every 5 ms)."""

    def __enter__(self):
        import threading

        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.grew = self.peak - self.start


# --------------------------------------------------------------------------- the item 8
def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "psc6k", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_json_file_given_as_annotations_is_one_short_line(tmp_path):
    big = tmp_path / "sub.json"
    shutil.copy(GT, tmp_path / "gt.npz")
    from psc6k.submission import load_submission, save_submission

    save_submission(load_submission(GT), big)
    r = _run("eval", GT, "-a", big)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert len(line) <= 600 and "sub.json" in line, line


def test_csv_missing_xa_says_so(tmp_path):
    text = CSV.read_text().splitlines()
    header = text[0].split(",")
    i = header.index("XA")
    rows = [",".join(c for k, c in enumerate(line.split(",")) if k != i) for line in text]
    bad = tmp_path / "no_xa.csv"
    bad.write_text("\n".join(rows) + "\n")
    r = _run("eval", GT, "-a", bad)
    assert r.returncode == 2 and "XA" in r.stderr.splitlines()[-1], r.stderr


def test_truncated_json_to_serve_model_scores(tmp_path):
    bad = tmp_path / "scores.json"
    bad.write_text('{"PSCNet": {"overall": {"pck@0.05": 5')
    r = _run("serve", "-a", CSV, "--db", f"sqlite:///{tmp_path / 'lb.sqlite'}", "--model-scores", bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "scores.json" in r.stderr, r.stderr


def test_annotate_init_with_directories_is_not_a_sqlalchemy_traceback(tmp_path):
    for flag in ("--pairs", "--images", "--db", "--config"):
        args = {"--pairs": CSV, "--images": S, "--db": tmp_path / "s.sqlite"}
        args[flag] = tmp_path
        argv = ["annotate", "init"] + [str(x) for kv in args.items() for x in kv]
        r = _run(*argv)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (flag, r.stderr[-2000:])
        assert len(r.stderr.strip().splitlines()[-1]) <= 600


def test_missing_torch_gives_the_install_hint(tmp_path):
    """torch is imported inside predict's / train's run(): the hint must still come."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "torch.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    env = {**os.environ, "PYTHONPATH": f"{shim}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for argv in (["predict", "-c", "x.pth", "-a", CSV, "-i", S, "-o", tmp_path / "p.npz"],
                 ["train", "estimator", "-i", S, "--train-pairs", S / "train_pairs_ps.csv", "-o", tmp_path / "o"]):
        r = _run(*argv, env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert "psc6k[model]" in r.stderr, r.stderr


def test_unexpected_exception_is_one_line_with_status_1(monkeypatch, capsys):
    import types

    import psc6k.cli as cli

    def boom(args):
        raise KeyError("x")

    target = types.SimpleNamespace(__doc__="A command that has a bug.", add_arguments=lambda parser: None, run=boom)
    entry = types.SimpleNamespace(load=lambda: target)
    monkeypatch.setattr(cli, "discover_commands", lambda: {"boom": entry})
    assert cli.main(["boom"]) == 1
    err = capsys.readouterr().err
    assert "internal error" in err and "PSC6K_DEBUG" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_demo_checkpoint_keeps_a_file_safe_submission_and_prints_a_working_command(work, tmp_path, capsys):
    import shlex

    if work["ckpt"] is None:
        pytest.skip("needs torch")
    ckpt = tmp_path / "checkpoint last.pth.tar"
    shutil.copy(work["ckpt"], ckpt)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--checkpoint", str(ckpt), "--pairs", "2", "--examples", "0",
                 "--use-sample-clicks", "--device", "cpu", "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    kept = out / "submissions" / "PSCNet-checkpoint_last.npz"
    assert kept.is_file()
    line = next(ln for ln in stdout.splitlines() if ln.startswith("score PSCNet again: "))
    argv = shlex.split(line[len("score PSCNet again: "):])
    assert argv[:2] == ["psc6k", "eval"]
    assert main(argv[1:] + ["--bootstrap", "0"]) == 0


def test_a_dead_pool_worker_is_one_line_in_every_command(monkeypatch, capsys):
    """``psc6k.parallel``'s pool is shared (synth, build-keypoints); a worker killed by a signal or
    the OOM killer is a clean line with exit 2 in any command, not a traceback."""
    from concurrent.futures.process import BrokenProcessPool

    import psc6k.commands.synth as synth_command
    from psc6k.cli import main

    def dies(args):
        raise BrokenProcessPool("A process in the process pool was terminated abruptly")

    monkeypatch.setattr(synth_command, "run", dies)
    rc = main(["synth", "--out", "unused"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "worker process died abruptly" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
