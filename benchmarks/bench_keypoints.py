"""Benchmark: fast keypoint sampling vs. the naive reading of PSC6K Appendix A.1.

Both methods run on the same sketches and the same object masks:

* fast  - ``psc6k.keypoints.analyze_sketch`` (whole pipeline from the image: binarise, mask,
          grid-subsampled kNN spectral clustering, connected parts, centroid keypoints);
* naive - scikit-learn ``SpectralClustering(8, affinity="nearest_neighbors")`` over every mask
          pixel (``psc6k.keypoints.reference_pseudo_parts``), keypoint = cluster centroid, as the
          paper describes (its time counts the clustering only, not the mask).

Quality: coverage cost = mean distance (px) from a mask pixel to its nearest keypoint (lower is
better), share of sketches whose 8 parts are each connected, share of keypoints on the mask.

Usage::

    python benchmarks/bench_keypoints.py                    # 24 generated sketches, both methods
    python benchmarks/bench_keypoints.py --n 60 --sample    # + sketches of the bundled sample
    python benchmarks/bench_keypoints.py --throughput 6250 --workers 2   # build-keypoints batch
    python benchmarks/bench_keypoints.py --solvers --n 100  # shift-invert solvers compared

Sketches are Sketchy-like drawings generated with OpenCV (closed and gappy outlines, open limbs,
interior strokes, 1-3 px anti-aliased lines, 256 x 256) by :mod:`psc6k.testing`;
``--sample`` adds the PNG sketches of ``psc6k/data/sample`` when it exists.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from psc6k import cli
from psc6k import keypoints as K
from psc6k.keypoints import parts as P, spectral as S
from psc6k.testing import add_specks, make_sketch, split_drawing


def _sample_sketches() -> list[np.ndarray]:
    root = Path(K.__file__).resolve().parent.parent / "data" / "sample"
    paths = sorted(p for p in root.rglob("*.png") if "/sketch/" in p.relative_to(root).as_posix())
    return [K.load_sketch(p) for p in paths]


def _naive_keypoints(parts: np.ndarray, k: int) -> np.ndarray:
    rows, cols = np.nonzero(parts >= 0)
    lab = parts[rows, cols]
    cnt = np.bincount(lab, minlength=k)
    return np.column_stack([np.bincount(lab, cols, k) / cnt, np.bincount(lab, rows, k) / cnt])


def _inside(mask: np.ndarray, kps: np.ndarray) -> np.ndarray:
    r = np.clip(np.rint(kps[:, 1]).astype(int), 0, mask.shape[0] - 1)
    c = np.clip(np.rint(kps[:, 0]).astype(int), 0, mask.shape[1] - 1)
    return mask[r, c]


def compare(images, k: int = 8, seed: int = 0, repeats: int = 3, naive: bool = True) -> dict:
    rows = []
    for i, img in enumerate(images):
        best, best_cpu = np.inf, np.inf
        try:
            K.analyze_sketch(img, k, seed)
        except K.SketchError as exc:  # the bundled sample holds deliberately broken sketches
            print(f"  sketch {i:3d}: skipped ({exc.reason}: {exc})")
            continue
        for _ in range(repeats):  # min of a few runs: the machine is shared
            t, c = time.perf_counter(), time.process_time()
            res = K.analyze_sketch(img, k, seed)
            best = min(best, time.perf_counter() - t)
            best_cpu = min(best_cpu, time.process_time() - c)
        row = {
            "area": int(res.mask.sum()), "dil": res.dilation_iterations, "nodes": res.n_nodes,
            "fast_s": best, "fast_cpu": best_cpu, "fast_cov": K.coverage_cost(res.mask, res.keypoints),
            "fast_conn": K.parts_connected(res.parts, k),
            "fast_in": float(_inside(res.mask, res.keypoints).mean()),
        }
        if naive:
            t, c = time.perf_counter(), time.process_time()
            ref = K.reference_pseudo_parts(res.mask, k, seed)
            row["naive_s"] = time.perf_counter() - t
            row["naive_cpu"] = time.process_time() - c
            kps = _naive_keypoints(ref, k)
            row["naive_cov"] = K.coverage_cost(res.mask, kps)
            row["naive_conn"] = K.parts_connected(ref, k)
            row["naive_in"] = float(_inside(res.mask, kps).mean())
        rows.append(row)
        print(f"  sketch {i:3d}: mask {row['area']:6d} px, {row['dil']} dilations, {row['nodes']} nodes, "
              f"fast {1000 * row['fast_s']:6.1f} ms cov {row['fast_cov']:.2f}"
              + (f" | naive {1000 * row['naive_s']:7.1f} ms cov {row['naive_cov']:.2f}" if naive else ""),
              flush=True)
    return rows


def report(rows, naive: bool = True) -> None:
    def col(name):
        return np.array([r[name] for r in rows], dtype=float)

    print()
    print(f"{len(rows)} sketches, median mask {int(np.median(col('area')))} px")
    print(f"{'':28s}{'fast':>14s}" + (f"{'naive':>14s}{'ratio':>10s}" if naive else ""))
    for label, key in (("median wall time (ms)", "_s"), ("median CPU time (ms)", "_cpu")):
        ft = np.median(col("fast" + key)) * 1000
        line = f"{label:28s}{ft:14.1f}"
        if naive:
            nt = np.median(col("naive" + key)) * 1000
            line += f"{nt:14.1f}{nt / ft:9.1f}x"
        print(line)
    fc = col("fast_cov").mean()
    line = f"{'mean coverage cost (px)':28s}{fc:14.3f}"
    if naive:
        nc = col("naive_cov").mean()
        line += f"{nc:14.3f}{fc / nc:10.3f}"
    print(line)
    if naive:
        rel = col("fast_cov") / col("naive_cov")
        print(f"{'per-sketch cost ratio':28s}  median {np.median(rel):.3f}, worst {rel.max():.3f}, best {rel.min():.3f}")
    line = f"{'parts connected (%)':28s}{100 * col('fast_conn').mean():14.1f}"
    if naive:
        line += f"{100 * col('naive_conn').mean():14.1f}"
    print(line)
    line = f"{'keypoints on the mask (%)':28s}{100 * col('fast_in').mean():14.1f}"
    if naive:
        line += f"{100 * col('naive_in').mean():14.1f}"
    print(line)


def throughput(n: int, workers: int, seed: int = 0) -> None:
    """Write ``n`` human-like drawings as PNGs and time ``psc6k build-keypoints`` on them.

    The drawings: generated sketches (gappy outlines, limbs, details), a quarter with 3 pen
    specks far from the drawing and a quarter with 3 near it.  Prints ms per sketch, the
    machine's load average (the machine may be shared) and the workers' peak memory, with the
    journal and --report on, as a 75k-sketch run would use them.
    """
    import resource

    import cv2

    rng = np.random.default_rng(seed)
    pool = []
    for i in range(min(n, 500)):
        img = make_sketch(rng)
        if i % 4 == 1:
            img = add_specks(img, rng, 3, 24, 60, outside=True)
        elif i % 4 == 2:
            img = add_specks(img, rng, 3, 2, 5, max_size=3)
        pool.append(img)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "sketches"
        for i in range(n):
            d = src / f"c{i % 125:03d}"
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"s{i:05d}.png"), pool[i % len(pool)])
        out = Path(tmp) / "kps.csv"
        load0 = os.getloadavg()[0]
        sampler = _RssSampler()
        t = time.perf_counter()
        status = cli.main(["build-keypoints", str(src), "--out", str(out), "--workers", str(workers),
                       "--keep-going", "--no-progress", "--report", str(Path(tmp) / "report.csv")])
        dt = time.perf_counter() - t
        samples = sampler.stop()
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    ms = 1000 * dt / n
    print(f"build-keypoints: {n} sketches, {workers} workers: {dt:.1f} s = {ms:.2f} ms/sketch "
          f"(target 8.0 ms: 75,471 Sketchy sketches in {75471 * ms / 60000:.1f} min; exit {status}); "
          f"load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end on {os.cpu_count()} CPUs; "
          f"peak worker RSS {rss:.0f} MB")
    if len(samples) >= 8:
        # the first quarter holds the workers' start-up (imports); compare the steady state after it
        q = len(samples) // 4
        second, last = max(samples[q:2 * q]), max(samples[-q:])
        print(f"memory over the run (RSS of all workers, sampled every {_RssSampler.EVERY_S} s): peak "
              f"{second:.0f} MB in the second quarter of the run, {last:.0f} MB in the last quarter "
              f"({100 * (last - second) / second:+.1f}%)")


class _RssSampler:
    """Polls the total resident memory of this process's child processes (the pool workers)."""

    EVERY_S = 0.5

    def __init__(self):
        import threading

        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.EVERY_S):
            mb = _children_rss_mb()
            if mb:
                self.samples.append(mb)

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return self.samples


def _children_rss_mb() -> float:
    """Summed VmRSS (MB) of this process's children, from /proc (0 where there is no /proc)."""
    total = 0.0
    try:
        tasks = Path("/proc/self/task").iterdir()
        children = {c for t in tasks for c in (t / "children").read_text().split()}
    except OSError:
        return 0.0
    for pid in children:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def solver_evidence(n: int, seed: int = 0) -> None:
    """The shift-invert solve of the spectral embedding, three ways, on the graphs of ``n``
    generated drawings: the banded Cholesky used (LAPACK ``pbtrf``), SciPy's sparse LU (the
    previous one) and a dense Cholesky; ms per graph and the largest embedding difference."""
    import scipy.linalg as sl
    from scipy import sparse
    from scipy.sparse import csgraph
    from scipy.sparse.linalg import LinearOperator, eigsh, splu
    from threadpoolctl import threadpool_limits

    graphs, real = [], P.knn_affinity
    P.knn_affinity = lambda *a, **kw: graphs.append(real(*a, **kw)) or graphs[-1]
    try:
        rng = np.random.default_rng(seed)
        for _ in range(n):
            try:
                K.analyze_sketch(make_sketch(rng), seed=seed)
            except K.SketchError:
                pass
    finally:
        P.knn_affinity = real

    def embed(aff, solver):
        m = aff.shape[0]
        lap, dd = csgraph.laplacian(aff, normed=True, return_diag=True)
        if solver == "band":
            solve = S.shifted_inverse(lap, S.SHIFT)
        elif solver == "splu":
            solve = splu(sparse.csc_matrix(lap + S.SHIFT * sparse.identity(m, format="csc"))).solve
        else:
            dense = lap.toarray() + S.SHIFT * np.eye(m)
            factor = sl.cho_factor(dense, check_finite=False)
            solve = lambda x: sl.cho_solve(factor, x, check_finite=False)  # noqa: E731
        v0 = np.random.RandomState(seed).uniform(-1, 1, m)
        vals, vecs = eigsh(LinearOperator((m, m), matvec=solve, dtype=np.float64), k=8, which="LM",
                           v0=v0, tol=1e-6)
        emb = vecs[:, np.argsort(-vals)] / dd[:, None]
        return emb * np.sign(emb[np.argmax(np.abs(emb), axis=0), np.arange(8)])

    sizes = [g.shape[0] for g in graphs]
    print(f"\nshift-invert solve on {len(graphs)} graphs of {min(sizes)}-{max(sizes)} nodes "
          f"(median {int(np.median(sizes))}), one thread:")
    with threadpool_limits(1):
        ref = [embed(g, "splu") for g in graphs]
        for solver in ("band", "splu", "dense"):
            for g in graphs[:10]:
                embed(g, solver)
            t = time.perf_counter()
            out = [embed(g, solver) for g in graphs]
            dt = (time.perf_counter() - t) / len(graphs)
            diff = max(np.abs(a - b).max() / np.abs(b).max() for a, b in zip(out, ref))
            print(f"  {solver:6s} {1000 * dt:6.2f} ms per graph (eigsh included), "
                  f"largest relative difference to splu {diff:.1e}")


def stray_evidence(n: int, seed: int = 0, gaps=(8, 16, 21, 32), fractions=(0.01, 0.03, 0.05, 0.08)) -> None:
    """The evidence behind the stray-mark thresholds (docs/builder.md).

    For each (grouping gap, ink fraction): on clean drawings (generated + the bundled sample's
    processable sketches) the share with anything set aside (false alarms) and the dilations
    they need; on the same drawings with 3 specks 24-60 px outside the drawing the share where all
    the specks are set aside (the object's ink is the clean drawing's); with 3 specks 2-5 px from the strokes the share kept; and on drawings in two
    large pieces 20-50 px apart, the share that still builds one mask with both pieces.
    """
    rng = np.random.default_rng(seed)
    clean = [make_sketch(rng) for _ in range(n)]
    sample = []
    for img in _sample_sketches():
        try:
            K.sketch_mask(img, stray_gap=0)
            sample.append(img)
        except K.SketchError:
            pass
    clean_all = clean + sample
    far = [add_specks(im, rng, 3, 24, 60, outside=True) for im in clean]
    near = [add_specks(im, rng, 3, 2, 5, max_size=3) for im in clean]
    split = [split_drawing(rng, int(g)) for g in rng.integers(20, 51, n)]
    ink = {name: [K.binarize(im) for im in imgs] for name, imgs in
           (("clean", clean_all), ("far", far), ("near", near), ("split", split))}
    print(f"\nstray marks: {len(clean)} generated + {len(sample)} sample drawings; "
          "far = 3 specks 24-60 px away, near = 3 specks 2-5 px away, split = 2 large pieces 20-50 px apart")
    print(f"{'gap px':>7s}{'fraction':>9s}{'clean: any set aside':>22s}{'far specks set aside':>22s}"
          f"{'near specks kept':>18s}{'split: one mask':>17s}")
    for gap in gaps:
        for frac in fractions:
            def run(inks):
                out = []
                for a in inks:
                    try:
                        out.append(K.object_mask(a, stray_gap=gap, stray_fraction=frac))
                    except K.SketchError:
                        out.append(None)
                return out
            c = run(ink["clean"])
            f = run(ink["far"])
            ne = run(ink["near"])
            sp = run(ink["split"])
            base = run(ink["clean"][:len(clean)])
            alarms = np.mean([r is None or r.n_stray > 0 for r in c])
            far_set = np.mean([r is not None and b is not None and not (r.ink & ~b.ink).any()
                               for r, b in zip(f, base)])
            near_kept = np.mean([r is not None and b is not None and r.n_stray == b.n_stray
                                 for r, b in zip(ne, base)])
            split_ok = np.mean([r is not None and r.n_stray == 0 for r in sp])
            print(f"{gap:7d}{frac:9.2f}{100 * alarms:21.1f}%{100 * far_set:21.1f}%{100 * near_kept:17.1f}%"
                  f"{100 * split_ok:16.1f}%")


def close_gaps_evidence(n: int, seed: int = 0, radius: int = 3) -> None:
    """Does ``--close-gaps`` change what the paper's rule gives on drawings with gapped outlines?

    For generated drawings whose outline has 1-2 gaps: the mask area with the paper's rule and
    with ``close_gaps_px=radius``, the share where the paper's mask stays an unfilled stroke band
    (under half the closed area), the mean keypoint displacement between the two, and the
    coverage cost of each one's keypoints on the closed silhouette.
    """
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < n:
        img = make_sketch(rng)
        try:
            a = K.analyze_sketch(img, seed=seed)
            b = K.analyze_sketch(img, seed=seed, close_gaps_px=radius)
        except K.SketchError:
            continue
        rows.append((a.mask.sum(), b.mask.sum(), np.linalg.norm(a.keypoints - b.keypoints, axis=1).mean(),
                     K.coverage_cost(b.mask, a.keypoints), K.coverage_cost(b.mask, b.keypoints),
                     a.dilation_iterations))
    r = np.array(rows, dtype=float)
    unfilled = r[:, 0] < 0.5 * r[:, 1]
    print(f"\n--close-gaps {radius} on {n} generated drawings (0-2 outline gaps each):")
    print(f"  mask area, paper / closed: median {np.median(r[:, 0] / r[:, 1]):.3f}, "
          f"mean {np.mean(r[:, 0] / r[:, 1]):.3f}")
    print(f"  paper's mask an unfilled stroke band (< half the closed area): {100 * unfilled.mean():.1f}%")
    print(f"  mean keypoint displacement: {r[:, 2].mean():.2f} px (median {np.median(r[:, 2]):.2f} px); "
          f"on unfilled ones {r[unfilled, 2].mean() if unfilled.any() else 0:.2f} px")
    print(f"  coverage cost on the closed silhouette: paper keypoints {r[:, 3].mean():.2f} px, "
          f"closed keypoints {r[:, 4].mean():.2f} px")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=24, help="generated sketches to compare on")
    ap.add_argument("--sample", action="store_true", help="also use the bundled sample's sketches (all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-naive", action="store_true", help="time the fast method only")
    ap.add_argument("--throughput", type=int, default=0, metavar="N",
                    help="also time build-keypoints on N generated sketches")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stray", action="store_true", help="print the stray-mark threshold evidence")
    ap.add_argument("--close-gaps", action="store_true", help="print the --close-gaps evidence")
    ap.add_argument("--solvers", action="store_true",
                    help="compare the spectral embedding's shift-invert solvers (banded Cholesky, splu, dense)")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    rng = np.random.default_rng(args.seed)
    images = [make_sketch(rng) for _ in range(args.n)]
    if args.sample:
        images += _sample_sketches()
    if args.solvers:
        solver_evidence(max(args.n, 1), args.seed)
        return
    if args.stray or args.close_gaps:
        if args.stray:
            stray_evidence(max(args.n, 1), args.seed)
        if args.close_gaps:
            close_gaps_evidence(max(args.n, 1), args.seed)
        return
    if images:
        rows = compare(images, seed=args.seed, naive=not args.no_naive)
        report(rows, naive=not args.no_naive)
    if args.throughput:
        throughput(args.throughput, args.workers, args.seed)


if __name__ == "__main__":
    main()
