"""Time ``psc6k synth`` on a PSC6K-sized set (125 categories x 10 photos x 5 sketches = 6,250 pairs).

Prints, side by side:

1. the full generation with ``--workers`` processes (default 2; target <= 5 minutes), with its
   progress bar, and the size on disk;
2. the same work with 1 worker on a small subset, extrapolated (the serial reference), and where
   the time of one photo goes (rendering vs. the keypoint builder ``psc6k.keypoints``);
3. the photo -> sketch inverse of a warp: Newton (what synth uses) vs. plain fixed-point
   iteration (the naive solver) to the same 1e-7 px tolerance.

Usage::

    python benchmarks/bench_synth.py                    # full size, 2 workers
    python benchmarks/bench_synth.py --categories 20    # smaller, for a quick look
    python benchmarks/bench_synth.py --out /tmp/psc6k_synth --keep
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from psc6k import keypoints as kp_mod
from psc6k.formats import read_annotations
from psc6k.pck import evaluate
from psc6k.submission import load_submission
from psc6k.synth import generate
from psc6k.synth.dataset import category_names, make_photo_record
from psc6k.synth.warp import pixel_grid, random_warp


def _du(path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def naive_inverse(warp, points, tol=1e-7, iterations=500):
    """Fixed-point iteration only: p <- M^-1 q - D(p) (linear convergence at rate Lip(D))."""
    a_inv = np.linalg.inv(warp.matrix[:, :2])
    r = (np.asarray(points, float) - warp.matrix[:, 2]) @ a_inv.T
    p = r.copy()
    for _ in range(iterations):
        p_next = r - warp.tps(p)
        done = np.abs(p_next - p).max() < tol
        p = p_next
        if done:
            break
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--categories", type=int, default=125)
    ap.add_argument("--photos-per-category", type=int, default=10)
    ap.add_argument("--sketches-per-photo", type=int, default=5)
    ap.add_argument("--train-photos-per-category", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--flow-size", type=int, default=32)
    ap.add_argument("--serial-photos", type=int, default=6, help="photos in the 1-worker reference run")
    ap.add_argument("--out", help="output folder (default: a temporary folder, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the generated set")
    args = ap.parse_args(argv)

    tmp = None
    out = args.out or (tmp := tempfile.mkdtemp(prefix="bench_synth_"))
    n_pairs = args.categories * args.photos_per_category * args.sketches_per_photo
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} before the run (other jobs share it)")

    # 2. serial reference and the breakdown of one photo, first (cheap)
    names = category_names(args.categories)
    t0 = time.perf_counter()
    t_kp = 0.0
    orig = kp_mod.sample_keypoints

    def timed(*a, **k):
        nonlocal t_kp
        t = time.perf_counter()
        try:
            return orig(*a, **k)
        finally:
            t_kp += time.perf_counter() - t

    kp_mod.sample_keypoints = timed
    try:
        for i in range(args.serial_photos):
            make_photo_record(names[i % len(names)], 1000 + i, "test", seed=0,
                              sketches_per_photo=args.sketches_per_photo, flow_size=args.flow_size)
    finally:
        kp_mod.sample_keypoints = orig
    t_serial = (time.perf_counter() - t0) / args.serial_photos
    n_photos = args.categories * (args.photos_per_category + args.train_photos_per_category)

    # 3. warp inverse: Newton vs naive fixed point
    rng = np.random.default_rng(0)
    warps = [random_warp(rng) for _ in range(20)]
    grid = pixel_grid(args.flow_size)
    t0 = time.perf_counter()
    for w in warps:
        w.inverse(grid)
    t_newton = (time.perf_counter() - t0) / len(warps)
    t0 = time.perf_counter()
    err = 0.0
    for w in warps:
        p = naive_inverse(w, grid)
        err = max(err, float(np.abs(w.forward(p) - grid).max()))
    t_naive = (time.perf_counter() - t0) / len(warps)

    # 1. the full set
    print(f"generating {n_pairs:,} test pairs ({n_photos:,} photos) with {args.workers} workers into {out}")
    import resource

    def cpu_seconds():
        """CPU time of this process and of its finished children (the workers), user + system."""
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    c0 = cpu_seconds()
    t0 = time.perf_counter()
    summary = generate(out, categories=args.categories, photos_per_category=args.photos_per_category,
                       sketches_per_photo=args.sketches_per_photo,
                       train_photos_per_category=args.train_photos_per_category, seed=0, workers=args.workers,
                       flow_size=args.flow_size, force=True, progress=True)
    t_full = time.perf_counter() - t0
    cpu_full = cpu_seconds() - c0
    size = _du(out)
    # the ground truth must score exactly 100 on the whole set
    t0 = time.perf_counter()
    gt = evaluate(read_annotations(os.path.join(out, "test_pairs_ps.csv")),
                  load_submission(os.path.join(out, "gt_flows.npz")), n_bootstrap=0).to_dict()["overall"]
    t_eval = time.perf_counter() - t0

    print()
    print(f"{'':44s}{'measured':>14s}{'reference':>16s}")
    print(f"{'full set, ' + str(args.workers) + ' workers (s)':44s}{t_full:14.1f}"
          f"{t_serial * n_photos:16.1f}  <- 1 worker, extrapolated from {args.serial_photos} photos")
    print(f"{'  per test pair (ms)':44s}{1000 * t_full / summary.n_test_pairs:14.1f}"
          f"{1000 * t_serial * n_photos / max(summary.n_test_pairs, 1):16.1f}")
    print(f"{'  CPU time, all processes (s)':44s}{cpu_full:14.1f}")
    print(f"{'  wall on ' + str(args.workers) + ' idle cores, = CPU / workers (s)':44s}{cpu_full / args.workers:14.1f}"
          "  <- what a machine without other jobs would take")
    if n_pairs >= 6250:
        print(f"{'  target: <= 300 s (measured wall)':44s}{'met' if t_full <= 300 else 'NOT met':>14s}")
        print(f"{'  target: <= 300 s (idle-core estimate)':44s}{'met' if cpu_full / args.workers <= 300 else 'NOT met':>14s}")
    print(f"{'one photo + ' + str(args.sketches_per_photo) + ' sketches, 1 worker (s)':44s}{t_serial:14.3f}")
    print(f"{'  of which psc6k.keypoints (s)':44s}{t_kp / args.serial_photos:14.3f}")
    print(f"{'warp inverse on ' + str(args.flow_size) + 'x' + str(args.flow_size) + ' grid (ms)':44s}"
          f"{1000 * t_newton:14.2f}{1000 * t_naive:16.2f}  <- naive fixed point (max residual {err:.1e} px)")
    print(f"{'size on disk (MB)':44s}{size / 1e6:14.1f}")
    print(f"{'gt_flows.npz PCK@0.05 / @0.10 (psc6k.pck)':44s}{gt['pck@0.05']:7.2f} / {gt['pck@0.10']:.2f}"
          f"   in {t_eval:.1f} s")
    print(f"{'pairs / photos / sketches / invalid':44s}{summary.n_test_pairs:>6d} / {summary.n_photos} / "
          f"{summary.n_sketches} / {summary.n_invalid}")
    if tmp and not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
