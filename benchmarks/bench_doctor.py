"""Benchmark of ``psc6k doctor`` (issue #23): the full benchmark (6,250 pairs) in about a second.

Builds a PSC6K-shaped set (the full set's shape: 125 categories x 50 pairs; per pair a random
scale-and-shift maps sketch onto photo, and the flows are that map, exactly), corrupts it with ``swap_directions + swap_xy``, then in one run times
``psc6k.pck.evaluate`` once (no bootstrap) and ``psc6k.doctor.diagnose`` (23 fixes) side by side,
plus ``psc6k doctor`` end to end (process start to verdict) on the NPZ.

    flock /tmp/psc6k_bench.lock python benchmarks/bench_doctor.py [--pairs 6250] [--flow-size 16]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench_eval import make_set
from psc6k.doctor import diagnose
from psc6k.formats import Annotations, write_test_pairs_ps
from psc6k.pck import evaluate, pixels_to_flow
from psc6k.submission import Submission, save_submission


def affine_set(n_pairs, flow_size, seed=0):
    """Pairs whose photo is a scaled and shifted sketch; flows exact in both directions."""
    ann0, _ = make_set(n_pairs, flow_size, seed)  # paths and categories of the full benchmark's shape
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.7, 1.3, (n_pairs, 1, 1))
    shift = rng.uniform(-30, 30, (n_pairs, 1, 2))
    sk = rng.uniform(60, 196, (n_pairs, 8, 2)).round(2)
    pk = scale * (sk - 128) + 128 + shift
    grid = np.stack(np.meshgrid(np.linspace(0, 255, flow_size), np.linspace(0, 255, flow_size), indexing="xy"), -1)
    grid = grid[None].reshape(1, -1, 2)
    s2p = pixels_to_flow(scale * (grid - 128) + 128 + shift).reshape(n_pairs, flow_size, flow_size, 2)
    p2s = pixels_to_flow((grid - 128 - shift) / scale + 128).reshape(n_pairs, flow_size, flow_size, 2)
    ann = Annotations.from_arrays(ann0.photo, ann0.sketch, pk, sk)
    return ann, Submission("bench", "flow", ann.photo, ann.sketch, s2p.astype(np.float32), p2s.astype(np.float32))


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=6250)
    ap.add_argument("--flow-size", type=int, default=16)
    args = ap.parse_args()
    ann, sub = affine_set(args.pairs, args.flow_size)
    sub.sketch_to_photo, sub.photo_to_sketch = (np.ascontiguousarray(sub.photo_to_sketch[..., ::-1]),
                                                np.ascontiguousarray(sub.sketch_to_photo[..., ::-1]))
    t_eval, _ = best_of(lambda: evaluate(ann, sub, n_bootstrap=0))
    t_doc, diag = best_of(lambda: diagnose(ann, sub))
    print(f"pairs {len(ann)}, flows {args.flow_size}x{args.flow_size}; top suspect {diag.top['fix']} "
          f"(gain {diag.top['gain']:.1f} points)")
    print(f"evaluate (one scoring, no bootstrap): {t_eval:.3f} s")
    print(f"diagnose (23 fixes + warnings):       {t_doc:.3f} s   ratio {t_doc / t_eval:.1f}x one scoring")
    with tempfile.TemporaryDirectory() as tmp:
        write_test_pairs_ps(ann, os.path.join(tmp, "a.csv"))
        save_submission(sub, os.path.join(tmp, "s.npz"))
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "psc6k", "doctor", os.path.join(tmp, "s.npz"), "--annotations",
                            os.path.join(tmp, "a.csv")], capture_output=True, text=True)
        print(f"psc6k doctor end to end (exit {r.returncode}): {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
