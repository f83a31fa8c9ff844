"""The whole benchmark, end to end, on the bundled sample (``psc6k demo``).

1. **keypoints**: 8 per sketch with :func:`psc6k.keypoints.sample_keypoints` (SPEC §4 A.1)
   -> ``annotations/keypoints.csv``;
2. **crowd clicks**: the sample's exact ground-truth flows (``gt_flows.npz``) place each sketch
   keypoint on its photo, and :func:`psc6k.synth.simulate_clicks` has 3 simulated participants click
   it (per-participant noise, ~1% gross outliers) -> ``annotations/clicks.csv``; with
   ``use_sample_clicks`` the sample's own ``clicks.csv`` and keypoints are used instead;
3. **aggregation**: the 3-sigma rule (:func:`psc6k.groundtruth.ground_truth_from_clicks`, as
   ``psc6k aggregate``) -> the PSC6K CSVs ``annotations/test_pairs_ps.csv``, ``test_pairs_st.csv``
   and ``aggregate_report.json``;
4. **methods**: the classical baselines (:mod:`psc6k.baselines`), and PSCNet when a checkpoint is
   given and torch is installed -> ``submissions/*.npz``;
5. **scores and report**: :func:`psc6k.report.write_report` -> ``report/index.html``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from psc6k import cli
from psc6k.baselines import BASELINES, run_baselines
from psc6k.data import sample_path
from psc6k.errors import ParameterError, Psc6kError
from psc6k.formats import Annotations, read_annotations, read_clicks, write_clicks, write_keypoints_csv
from psc6k.groundtruth import PS_CSV, ground_truth_from_clicks
from psc6k.images import read_image
from psc6k.inputs import check_input_file
from psc6k.keypoints import sample_keypoints
from psc6k.pck import transfer_keypoints
from psc6k.report import write_report
from psc6k.sketchy import write_sketchy_root
from psc6k.submission import Submission, align_submission, load_submission, save_submission
from psc6k.synth import simulate_clicks

#: File that marks a folder as written by ``psc6k demo`` (only such folders are overwritten).
MARKER = ".psc6k-demo"
DEFAULT_OUT = "psc6k-demo"
#: What the demo writes inside its folder (removed before a rerun).
OWNED = ("annotations", "submissions", "report", "leaderboard.json", MARKER)


@dataclass
class DemoResult:
    """What :func:`run_demo` did: paths, leaderboard rows, timings (seconds) and notes."""

    out: Path
    report: Path
    leaderboard: list
    timings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    aggregation: dict = field(default_factory=dict)
    human_agreement: dict = field(default_factory=dict)
    pairwise: list = field(default_factory=list)  # psc6k.report.pairwise_rows

    def to_dict(self) -> dict:
        return {"out": str(self.out), "report": str(self.report), "leaderboard": self.leaderboard,
                "timings_s": {k: round(v, 3) for k, v in self.timings.items()}, "notes": self.notes,
                "aggregation": self.aggregation, "human_agreement": self.human_agreement,
                "pairwise": self.pairwise}


def prepare_out(out) -> Path:
    """Create ``out`` or reuse a folder an earlier demo wrote; refuse any other non-empty folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"`out` {out}: exists and is not a folder", param="out")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ParameterError(f"`out` {out}: folder exists, is not empty and was not written by 'psc6k demo' "
                                 f"(no {MARKER} file); choose another `out` or empty it", param="out")
        for name in OWNED:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("written by psc6k demo; safe to delete the folder\n", encoding="utf-8")
    except OSError as exc:
        raise ParameterError(f"`out` {out}: cannot write there ({exc.strerror})", param="out") from None
    return out


def _sample_root(sample) -> Path:
    """The benchmark folder the demo runs on: ``sample``, else the bundled sample."""
    if sample is None:
        return sample_path()
    root = Path(sample)
    if not (root / "test_pairs_ps.csv").is_file():
        raise ParameterError(f"`sample` {root}: no test_pairs_ps.csv; expected a benchmark folder written by "
                             "'psc6k synth'", param="sample")
    return root


def build_sketch_keypoints(sketches, images_root, seed: int = 0, progress: bool = True) -> np.ndarray:
    """8 keypoints per sketch (``psc6k.keypoints.sample_keypoints``), float64 ``[N, 8, 2]``."""
    from tqdm import tqdm

    out = []
    for rel in tqdm(sketches, desc="keypoints", unit="sketch", disable=not progress, leave=False):
        path = Path(images_root) / rel
        img = read_image(images_root, rel, "rgb")
        try:
            out.append(sample_keypoints(img, k=8, seed=seed))
        except Psc6kError as exc:
            raise Psc6kError(f"{path}: {exc}") from None
    return np.asarray(out, dtype=np.float64).reshape(len(sketches), 8, 2)


def run_demo(out=DEFAULT_OUT, *, checkpoint=None, device: str | None = None, sample=None,
             use_sample_clicks: bool = False, seed: int = 0, n_examples: int = 4, n_bootstrap: int = 1000,
             max_pairs: int | None = None, progress: bool = True, log=print, command=None) -> DemoResult:
    """Run the whole benchmark on the bundled sample (or the synth folder ``sample``).

    Parameters
    ----------
    out : path
        Output folder; must be new, empty, or written by an earlier demo.
    checkpoint : path, optional
        A PSCNet checkpoint to score beside the baselines, through the registered ``psc6k predict``
        command (needs ``psc6k[model]``; skipped with a note when that command or torch is missing).
    device : str, optional
        Torch device for PSCNet (default: CUDA when available).
    sample : path, optional
        A folder written by ``psc6k synth`` instead of the bundled sample.
    use_sample_clicks : bool
        Aggregate the sample's own ``clicks.csv`` (with its keypoints) instead of building
        keypoints and simulating clicks.
    seed : int
        Seed of the keypoint builder and the simulated crowd.
    n_examples, n_bootstrap : int
        Example pairs drawn and bootstrap resamples in the report.
    max_pairs : int, optional
        Use only the first pairs of the sample (a quicker look).
    log : callable
        Where progress lines go (``print``; ``None`` for silence).
    command : sequence of str, optional
        The command line that ran the demo, recorded in the report's provenance.
    """
    say = log or (lambda *a, **k: None)
    timings: dict[str, float] = {}
    notes: list[str] = []
    t0 = time.perf_counter()
    root = _sample_root(sample)
    if checkpoint is not None:
        try:
            check_input_file(checkpoint, what="a PSCNet checkpoint (.pth.tar)", max_bytes=None, text=False)
        except Psc6kError as exc:
            raise ParameterError(f"`checkpoint` {exc}", param="checkpoint") from None
    out = prepare_out(out)
    ann_dir = out / "annotations"
    ann_dir.mkdir()
    write_sketchy_root(ann_dir, root, written_by="psc6k demo")  # `psc6k report -a annotations/...` finds the images
    sample_ann = _first_pairs(read_annotations(root / "test_pairs_ps.csv"), max_pairs)
    photos, sketches = list(sample_ann.photo), list(sample_ann.sketch)
    say(f"sample: {root} ({len(photos)} pairs, {len(set(sample_ann.category))} categories)")

    # 1-2. keypoints and crowd clicks
    t = time.perf_counter()
    sketch_kps, clicks = _keypoints_and_clicks(root, sample_ann, use_sample_clicks, seed, progress, timings, notes, say)
    write_keypoints_csv(dict(zip(sketches, sketch_kps)), ann_dir / "keypoints.csv")
    write_clicks(clicks, ann_dir / "clicks.csv")
    timings["clicks"] = time.perf_counter() - t - timings["keypoints"]  # simulating + writing

    # 3. aggregation
    t = time.perf_counter()
    agg, ann = _aggregate_to_csvs(clicks, sample_ann, sketch_kps, ann_dir, notes)
    timings["aggregate"] = time.perf_counter() - t
    say(f"aggregate: {agg.n_rejected} of {agg.n_clicks} clicks rejected by the 3-sigma rule "
        f"({100 * agg.rejected_fraction:.2f}%) -> {ann_dir / 'test_pairs_ps.csv'}")

    # 4. methods
    t = time.perf_counter()
    sub_dir = out / "submissions"
    pscnet = None
    if checkpoint is not None:  # first: a bad checkpoint fails before the slower steps
        pscnet = _pscnet_submission(checkpoint, ann_dir / "test_pairs_ps.csv", root, device, progress, notes, sub_dir)
        if pscnet is not None:
            timings["pscnet"] = time.perf_counter() - t
            say(f"PSCNet: {Path(checkpoint).name} in {timings['pscnet']:.1f} s -> {sub_dir / (pscnet.method + '.npz')}")
        t = time.perf_counter()
    subs = list(run_baselines(BASELINES, ann, root, progress=progress).values())
    timings["baselines"] = time.perf_counter() - t
    say(f"baselines: {', '.join(BASELINES)} in {timings['baselines']:.1f} s")
    for sub in subs:
        save_submission(sub, sub_dir / f"{file_safe_name(sub.method)}.npz")
    if pscnet is not None:
        subs.append(pscnet)  # already saved by psc6k predict

    # 5. scores and report
    t = time.perf_counter()
    report = write_report(ann, subs, root, out / "report", clicks=clicks, title="PSC6K demo: the bundled sample",
                          subtitle=(f"{len(ann)} photo-sketch pairs from the bundled synthetic sample, "
                                    f"{len(set(ann.category))} categories; ground truth aggregated from "
                                    f"{agg.n_clicks} simulated crowd clicks with the 3-sigma rule."),
                          n_examples=n_examples, n_bootstrap=n_bootstrap, progress=progress, command=command)
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    # the report scored everything once; its results.json holds the leaderboard and human agreement
    scored = json.loads((report.parent / "results.json").read_text(encoding="utf-8"))
    result = DemoResult(out, report, _round_rows(scored["leaderboard"]), timings, notes, agg.summary(),
                        scored.get("human_agreement") or {}, scored.get("pairwise") or [])
    (out / "leaderboard.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n", encoding="utf-8")
    return result


def _keypoints_and_clicks(root: Path, sample_ann, use_sample_clicks: bool, seed: int, progress: bool,
                          timings: dict, notes: list, say):
    """Steps 1-2 of the demo: sketch keypoints ``[N, 8, 2]`` and the crowd's clicks (a DataFrame).

    Built keypoints and clicks simulated on the exact flows, or the sample's own when asked for
    or when the sample has no ``gt_flows.npz`` (with a note).
    """
    photos, sketches = list(sample_ann.photo), list(sample_ann.sketch)
    gt_path = root / "gt_flows.npz"
    if use_sample_clicks or not gt_path.is_file():
        if not use_sample_clicks:
            notes.append(f"{gt_path.name} missing: used the sample's clicks.csv and keypoints")
        timings["keypoints"] = 0.0
        say("keypoints + clicks: the sample's own")
        return sample_ann.sketch_kps, _clicks_of_pairs(read_clicks(root / "clicks.csv"), photos, sketches)
    t = time.perf_counter()
    sketch_kps = build_sketch_keypoints(sketches, root, seed=seed, progress=progress)
    timings["keypoints"] = time.perf_counter() - t
    say(f"keypoints: 8 per sketch for {len(sketches)} sketches in {timings['keypoints']:.1f} s")
    clicks = simulate_clicks(photos, sketches, true_photo_points(gt_path, sample_ann, sketch_kps), seed)
    say(f"crowd: {len(clicks)} simulated clicks, 3 participants per keypoint")
    return sketch_kps, clicks


def _first_pairs(ann, max_pairs: int | None):
    """The first ``max_pairs`` pairs of ``ann`` (all when None)."""
    if max_pairs is None:
        return ann
    if max_pairs < 1:
        raise ParameterError(f"`max_pairs` must be >= 1, got {max_pairs}", param="max_pairs")
    return ann.subset(np.arange(min(max_pairs, len(ann))))


def _clicks_of_pairs(clicks, photos, sketches):
    """The rows of a clicks table that belong to the pairs ``zip(photos, sketches)``."""
    chosen = set(zip(photos, sketches))
    return clicks[[pair in chosen for pair in zip(clicks["photo"], clicks["sketch"])]].reset_index(drop=True)


def true_photo_points(gt_path, ann, sketch_kps: np.ndarray) -> np.ndarray:
    """Where the exact ground-truth flows of ``gt_flows.npz`` put each sketch keypoint on its photo.

    ``ann`` names the pairs (any order; the flow file may hold more), ``sketch_kps`` ``[N, 8, 2]``
    are their sketch keypoints in pixels. Returns ``[N, 8, 2]`` photo pixels, read the way the
    benchmark reads a flow (:func:`psc6k.pck.transfer_keypoints`), clipped to the image.
    """
    photos, sketches = list(ann.photo), list(ann.sketch)
    gt = load_submission(gt_path)
    probe = Annotations.from_arrays(photos, sketches, sketch_kps, sketch_kps, categories=ann.categories)
    chosen = set(zip(photos, sketches))
    rows = [i for i, pair in enumerate(zip(gt.photo, gt.sketch)) if pair in chosen]
    gt = Submission(gt.method, gt.kind, [gt.photo[i] for i in rows], [gt.sketch[i] for i in rows],
                    np.asarray(gt.sketch_to_photo)[rows], np.asarray(gt.photo_to_sketch)[rows])
    ann_idx, sub_idx = align_submission(gt, probe)
    true_photo = np.empty_like(sketch_kps)
    true_photo[ann_idx] = transfer_keypoints(np.asarray(gt.sketch_to_photo)[sub_idx], sketch_kps[ann_idx])
    return np.clip(true_photo, 0, 255)


def _aggregate_to_csvs(clicks, sample_ann, sketch_kps, ann_dir: Path, notes: list):
    """Step 3 of the demo: the PSC6K CSVs and ``aggregate_report.json`` under ``ann_dir``
    (:func:`psc6k.groundtruth.ground_truth_from_clicks`); returns (aggregate, annotations).

    Pairs with a keypoint that kept no click are left out, with a note.
    """
    gt = ground_truth_from_clicks(clicks, list(sample_ann.photo), list(sample_ann.sketch), sketch_kps,
                                  categories=sample_ann.categories, source=str(ann_dir / PS_CSV))
    dropped = [row["sketch"] for row in gt.report["pairs_not_written"]]
    if dropped:
        notes.append(f"{len(dropped)} pair(s) left out: a keypoint without any kept click ({', '.join(dropped[:3])})")
    gt.write(ann_dir)
    return gt.aggregate, gt.annotations


def _round_rows(rows):
    out = []
    for row in rows:
        r = {}
        for k, v in row.items():
            if isinstance(v, float):
                v = round(v, 4)
            elif isinstance(v, list):
                v = [round(x, 4) if isinstance(x, float) else x for x in v]
            r[k] = v
        out.append(r)
    return out


_CHECKPOINT_SUFFIXES = (".pth.tar", ".pth", ".pt", ".tar", ".ckpt")


def file_safe_name(text: str) -> str:
    """A file name made of ``[A-Za-z0-9._-]`` only (``"PSCNet (x y)"`` -> ``"PSCNet_x_y"``)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "submission"


def pscnet_method_name(checkpoint) -> str:
    """``PSCNet-<checkpoint file name without its suffix>``, e.g. ``PSCNet-checkpoint_last``."""
    name = Path(checkpoint).name
    for suffix in _CHECKPOINT_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return file_safe_name(f"PSCNet-{name}")


def _pscnet_submission(checkpoint, ann_csv: Path, root, device, progress, notes, sub_dir: Path | None = None):
    """PSCNet flows from a checkpoint through ``psc6k predict``, written to ``sub_dir`` (kept, under
    ``--out``, so the command printed afterwards works). A missing ``psc6k[model]`` install is a
    note; a checkpoint that cannot be read is an error (the user asked for it).

    The command is the one registered in the ``psc6k.commands`` entry-point group, run in its own
    process: the core never imports the model (or torch).
    """
    import subprocess
    import sys

    if "predict" not in cli.discover_commands():  # looked up when called (tests replace it)
        notes.append("PSCNet skipped: no 'psc6k predict' command is installed (pip install 'psc6k[model]')")
        return None
    method = pscnet_method_name(checkpoint)
    sub_dir = Path(sub_dir) if sub_dir is not None else Path(ann_csv).parent.parent / "submissions"
    out = sub_dir / f"{method}.npz"
    sub_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "psc6k", "predict", "--checkpoint", str(checkpoint), "--annotations", str(ann_csv),
           "--images", str(root), "--out", str(out), "--device", device or "auto", "--method", method]
    if not progress:
        cmd.append("--no-progress")
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        reason = ((proc.stderr or "").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"])[0]
        reason = reason.split(": error: ", 1)[-1]
        if "needs the Python package" in reason:
            notes.append(f"PSCNet skipped: {reason}")
            return None
        raise ParameterError(f"`checkpoint` {checkpoint}: PSCNet prediction failed: {reason}", param="checkpoint")
    return load_submission(out)


def format_leaderboard(rows, human: dict | None = None) -> str:
    """The leaderboard as a plain-text table."""
    lines = [f"{'#':>2}  {'method':<24} {'PCK@0.05':>9} {'95% CI':>13} {'PCK@0.10':>9} {'95% CI':>13} {'err px':>7}"]

    def ci(v):
        return f"{v[0]:5.1f}-{v[1]:5.1f}" if v else ""

    for r in rows:
        lines.append(f"{r['rank']:>2}  {r['method']:<24} {r['pck@0.05']:9.2f} {ci(r.get('pck@0.05_ci95')):>13} "
                     f"{r['pck@0.10']:9.2f} {ci(r.get('pck@0.10_ci95')):>13} {r['mean_error_px']:7.1f}")
    if human:
        lines.append(f"{'':>2}  {'human agreement':<24} {human.get('pck@0.05', float('nan')):9.2f} {'':>13} "
                     f"{human.get('pck@0.10', float('nan')):9.2f} {'':>13} {human.get('mean_error_px', float('nan')):7.1f}")
    return "\n".join(lines)
