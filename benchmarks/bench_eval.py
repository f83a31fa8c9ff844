"""Benchmark of PCK scoring and of reading submissions (issues #2, #21).

Builds a full-size PSC6K-shaped set (6,250 pairs x 2 directions, 16 x 16 flows), then in one run:
1. scores it with ``psc6k.pck.evaluate`` (reads the flow only at the 8 rounded keypoints), and
   with the naive reference loop of the paper's code: upsample every flow to 256 x 256
   (bilinear, align_corners=True; torch ``F.interpolate`` when torch is installed, else numpy),
   read the rounded keypoints, count; prints both times, the ratio, and checks equal PCK;
2. times ``psc6k eval`` end to end (process start to result) on the NPZ and on the same data as
   JSON (float32 flows written by ``save_submission``), side by side, with the peak RSS of each
   child process and the JSON / NPZ ratio;
3. the same for a few pairs of 256 x 256 flows (``--big-pairs``; the largest flows a scorer
   accepts by default): JSON memory stays the float64 arrays plus a fixed overhead.

    python benchmarks/bench_eval.py [--pairs 6250] [--flow-size 16] [--naive-pairs N] [--big-pairs 20]

Run it as ``flock /tmp/psc6k_bench.lock python benchmarks/bench_eval.py`` on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from psc6k.formats import Annotations, write_test_pairs_ps
from psc6k.pck import alpha_key, evaluate
from psc6k.sketchy import SKETCHY_CATEGORIES, photo_relpath, sketch_relpath
from psc6k.submission import Submission, identity_flow, save_submission


def make_set(n_pairs, flow_size, seed=0):
    rng = np.random.default_rng(seed)
    photo, sketch = [], []
    for i in range(n_pairs):
        cat = SKETCHY_CATEGORIES[(i // 50) % 125]
        photo.append(photo_relpath(cat, f"n{i // 5:08d}_{i // 5}"))
        sketch.append(sketch_relpath(cat, f"n{i // 5:08d}_{i // 5}-{i % 5 + 1}"))
    sk = rng.uniform(0, 255, (n_pairs, 8, 2)).round(2)
    pk = np.clip(sk + rng.normal(0, 15, sk.shape), 0, 255).round(2)
    ann = Annotations.from_arrays(photo, sketch, pk, sk)
    noise = lambda: rng.normal(0, 0.08, (n_pairs, flow_size, flow_size, 2)).astype(np.float32)
    base = identity_flow(n_pairs, flow_size).astype(np.float32)
    return ann, Submission("bench", "flow", photo, sketch, base + noise(), base + noise())


def naive_pck(ann, sub, alphas, size=256):
    """The reference loop: materialise each 256 x 256 upsampled flow, then read 8 points."""
    try:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(1)

        def upsample(flow):
            t = torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float64)).permute(2, 0, 1)[None]
            return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=True)[0].permute(1, 2, 0).numpy()
        backend = "torch F.interpolate"
    except ImportError:
        def upsample(flow):
            h, w, _ = flow.shape
            sy, sx = np.arange(size) * (h - 1) / (size - 1), np.arange(size) * (w - 1) / (size - 1)
            y0, x0 = np.minimum(sy.astype(int), h - 2), np.minimum(sx.astype(int), w - 2)
            fy, fx = (sy - y0)[:, None, None], (sx - x0)[None, :, None]
            a, b = flow[y0][:, x0], flow[y0][:, x0 + 1]
            c, d = flow[y0 + 1][:, x0], flow[y0 + 1][:, x0 + 1]
            return (1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * c + fx * d)
        backend = "numpy"
    hits = {a: 0 for a in alphas}
    total = 0
    for i in range(len(sub)):
        for flow, src, tgt in ((sub.sketch_to_photo[i], ann.sketch_kps[i], ann.photo_kps[i]),
                               (sub.photo_to_sketch[i], ann.photo_kps[i], ann.sketch_kps[i])):
            up = upsample(flow)
            idx = np.clip(np.round(src), 0, size - 1).astype(int)
            pred = (up[idx[:, 1], idx[:, 0]] + 1) * (size - 1) / 2
            dist = np.sqrt(((pred - tgt) ** 2).sum(-1))
            for a in alphas:
                hits[a] += int((dist <= a * size).sum())
            total += len(src)
    return {alpha_key(a): 100.0 * hits[a] / total for a in alphas}, backend


# VmHWM (peak RSS of this process image) rather than ru_maxrss, which Linux carries over from the
# forking parent -- this benchmark itself holds a large array when it starts the child.
_CHILD = ("import sys\nfrom psc6k.cli import main\nrc = main(sys.argv[1:])\n"
          "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
          "print('maxrss_kb', hwm, file=sys.stderr)\nsys.exit(rc)")


def run_cli(path, csv):
    """Wall time of ``psc6k eval --json`` in a fresh process, and that process's own peak RSS (MB)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _CHILD, "eval", str(path), "--annotations", str(csv), "--json"],
                       capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr)
    rss = int(r.stderr.rsplit("maxrss_kb", 1)[1].split()[0]) / 1024
    return dt, rss


def compare_containers(sub, csv, tmp, name, runs=3, time_target=True):
    """Print ``psc6k eval`` of the NPZ and the JSON of ``sub`` side by side: time, peak RSS, ratio
    (the time target, JSON <= 3x NPZ, is the full-size set's)."""
    npz = save_submission(sub, os.path.join(tmp, f"{name}.npz"))
    js = save_submission(sub, os.path.join(tmp, f"{name}.json"))
    times = {"npz": [], "json": []}
    for _ in range(runs):  # alternated, so a burst of load on the machine hits both
        for key, path in (("npz", npz), ("json", js)):
            times[key].append(run_cli(path, csv))
    (t_npz, rss_npz), (t_json, rss_json) = min(times["npz"]), min(times["json"])
    print(f"  {'':22}{'NPZ':>12}{'JSON':>12}{'JSON / NPZ':>12}")
    print(f"  {'file, MB':22}{os.path.getsize(npz) / 1e6:12.1f}{os.path.getsize(js) / 1e6:12.1f}")
    print(f"  {'wall time, s':22}{t_npz:12.2f}{t_json:12.2f}{t_json / t_npz:11.2f}x"
          + ("   target <= 3x" if time_target else ""))
    print(f"  {'peak RSS, MB':22}{rss_npz:12.0f}{rss_json:12.0f}{rss_json / rss_npz:11.2f}x   target <= 1024 MB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=6250)
    ap.add_argument("--flow-size", type=int, default=16)
    ap.add_argument("--naive-pairs", type=int, default=None, help="pairs for the naive loop (default: all)")
    ap.add_argument("--big-pairs", type=int, default=20, help="pairs of 256 x 256 flows (0 to skip)")
    args = ap.parse_args()
    alphas = (0.05, 0.10)
    ann, sub = make_set(args.pairs, args.flow_size)

    t_fast = float("inf")
    for _ in range(5):  # best of 5: a run of ~0.05 s is easily hit by another process's burst
        t0 = time.perf_counter()
        res = evaluate(ann, sub, alphas, n_bootstrap=0)
        t_fast = min(t_fast, time.perf_counter() - t0)
    t0 = time.perf_counter()
    res_boot = evaluate(ann, sub, alphas, n_bootstrap=1000)
    t_fast_boot = time.perf_counter() - t0

    m = args.naive_pairs or args.pairs
    sub_n = Submission("n", "flow", sub.photo[:m], sub.sketch[:m], sub.sketch_to_photo[:m], sub.photo_to_sketch[:m])
    ann_n = ann.subset(range(m))
    t0 = time.perf_counter()
    naive, backend = naive_pck(ann_n, sub_n, alphas)
    t_naive = time.perf_counter() - t0
    fast_n = evaluate(ann_n, sub_n, alphas, n_bootstrap=0).overall
    t_naive_full = t_naive * args.pairs / m

    print(f"PSC6K-sized scoring: {args.pairs} pairs x 2 directions, {args.flow_size}x{args.flow_size} flows")
    print(f"{'':34}{'ours':>12}{'naive (' + backend + ')':>30}{'ratio':>10}")
    print(f"{'scoring time, s (ours: best of 5)':34}{t_fast:12.3f}{t_naive_full:30.2f}{t_naive_full / t_fast:9.0f}x"
          + ("" if m == args.pairs else f"   (naive measured on {m} pairs, scaled)"))
    print(f"{'scoring + 1000 bootstrap CI, s':34}{t_fast_boot:12.3f}")
    for k in naive:
        print(f"{k:34}{fast_n[k]:12.4f}{naive[k]:30.4f}   {'identical' if abs(fast_n[k] - naive[k]) < 1e-9 else 'DIFFERENT'}")

    with tempfile.TemporaryDirectory() as tmp:
        csv = os.path.join(tmp, "test_pairs_ps.csv")
        write_test_pairs_ps(ann, csv)
        print(f"\npsc6k eval end to end (process start to JSON result; best of 3 runs each, alternated):")
        compare_containers(sub, csv, tmp, "full")
        if args.big_pairs:
            ann_b, sub_b = make_set(args.big_pairs, 256, seed=1)
            csv_b = os.path.join(tmp, "big_pairs_ps.csv")
            write_test_pairs_ps(ann_b, csv_b)
            print(f"\n{args.big_pairs} pairs of 256 x 256 flows (float64 arrays: "
                  f"{2 * sub_b.sketch_to_photo.size * 8 / 1e6:.0f} MB):")
            compare_containers(sub_b, csv_b, tmp, "big", time_target=False)
    print(f"\noverall PCK (ours, full set): {res.overall}; 95% CI {res_boot.ci95}")


if __name__ == "__main__":
    main()
