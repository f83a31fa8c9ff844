"""Sample 8 keypoints per sketch: object mask, spectral pseudo-parts, centroids (SPEC §4 A.1).

INPUT is a directory of sketch images (searched recursively) or a pair CSV with a ``sketch``
column (``test_pairs.csv`` from ``psc6k build-pairs``, a ``*_pairs_ps.csv``) or
``source_image,target_image`` columns (``*_pairs_st.csv``; the sketch side is used).  The output
is a ``sketch,X,Y`` CSV, one row per sketch that succeeded, in input order (sorted paths for a
directory, first appearance for a CSV).

Sketch keys in the output: for a CSV, its paths as written (relative to the Sketchy root); for a
directory, the path relative to the Sketchy root when the directory lies inside one (or
``--images`` names it), otherwise the path relative to INPUT.

A sketch that cannot be processed (unreadable or truncated file, empty or all-black image,
strokes that stay apart after the dilation bound) gets one error line on stderr and the batch
goes on; the exit status is 1 if any sketch failed, unless ``--keep-going``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from psc6k.errors import Psc6kError

HELP = "sample 8 keypoints per sketch (mask + spectral pseudo-parts)"
SECTION, ORDER = "build the benchmark", 20
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SKETCHY_MARKER = "rendered_256x256/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT",
                        help="directory of sketch images (recursive) or a pair CSV with a sketch column")
    parser.add_argument("--out", "-o", required=True, metavar="CSV", help="keypoints CSV to write (sketch,X,Y)")
    parser.add_argument("--images", metavar="ROOT", default=None,
                        help="root the CSV's paths are relative to (the Sketchy root); None means the "
                             "CSV's folder, or the Sketchy root recorded in summary.json by build-pairs. "
                             "For a directory INPUT, output keys are made relative to ROOT")
    parser.add_argument("--workers", "-j", type=int, default=1, metavar="N",
                        help="worker processes (0 = one per CPU)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the clustering (same for every sketch)")
    parser.add_argument("--viz", metavar="DIR", default=None,
                        help="also write one PNG per sketch: sketch | mask | pseudo-parts | keypoints")
    parser.add_argument("--max-dilations", type=int, default=None, metavar="N",
                        help="bound on 3x3 dilations used to connect strokes; None means ~6%% of the "
                             "image side (16 for 256x256)")
    parser.add_argument("--close-gaps", type=int, default=0, metavar="PX",
                        help="beyond the paper: also close outline gaps up to ~2*PX pixels so that an "
                             "almost-closed outline is filled (0 = the paper's rule only)")
    parser.add_argument("--keep-going", action="store_true",
                        help="exit 0 even if some sketches failed (they are still reported)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# --------------------------------------------------------------------------------------------
# collecting the sketches
# --------------------------------------------------------------------------------------------

def _sketchy_key(path: Path) -> str | None:
    """Path relative to the Sketchy root when ``path`` lies in a Sketchy tree, else None."""
    posix = path.resolve().as_posix()
    i = posix.rfind("/" + SKETCHY_MARKER)
    return posix[i + 1:] if i >= 0 else None


def collect_from_directory(root: Path, images_root: Path | None = None) -> list[tuple[str, Path]]:
    """(key, path) of every image file under ``root``, sorted by key."""
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    out = []
    for p in files:
        key = None
        if images_root is not None:
            try:
                key = p.resolve().relative_to(images_root.resolve()).as_posix()
            except ValueError:
                key = None
        if key is None:
            key = _sketchy_key(p)
        if key is None:
            key = p.relative_to(root).as_posix()
        out.append((key, p))
    out.sort(key=lambda kp: kp[0])
    return out


def collect_from_csv(path: Path, images_root: Path | None = None) -> list[tuple[str, Path]]:
    """(key, path) of the distinct sketches of a pair CSV, in order of first appearance."""
    from psc6k import formats

    from psc6k.inputs import check_input_file

    check_input_file(path, what="a pair CSV file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            header = [h.strip() for h in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise Psc6kError(f"{path}: cannot read ({exc})") from None
    if "sketch" in header and "photo" in header:
        sketches = formats.read_pair_list(path).sketch
    elif header == list(formats.ST_TEST_COLUMNS):
        sketches = formats.read_annotations(path).sketch
    elif header == list(formats.ST_TRAIN_COLUMNS):
        sketches = formats.read_train_pairs(path).sketch
    elif header == ["sketch", "X", "Y"]:
        sketches = list(formats.read_keypoints_csv(path))
    else:
        raise Psc6kError(f"{path}: line 1: expected a pair CSV with columns photo,sketch[,...] or "
                         f"source_image,target_image,...; got {','.join(header) or 'nothing'}")
    keys = list(dict.fromkeys(sketches))
    if images_root is not None:
        return [(key, images_root / key) for key in keys]
    # No --images: the CSV's folder, or the Sketchy root recorded by build-pairs beside it
    candidates = [path.parent]
    recorded = _recorded_sketchy_root(path.parent)
    if recorded is not None:
        candidates.append(recorded)
    probe = keys[:20]
    for base in candidates:
        if any((base / key).is_file() for key in probe):
            return [(key, base / key) for key in keys]
    tried = " or ".join(str(c) for c in candidates)
    raise Psc6kError(f"{path}: its sketch paths (e.g. {keys[0]!r}) do not exist relative to {tried}; "
                     "pass --images ROOT, the folder they are relative to (the Sketchy root)")


def _recorded_sketchy_root(folder: Path) -> Path | None:
    """The Sketchy root noted in ``summary.json`` by ``psc6k build-pairs``, if any."""
    summary = folder / "summary.json"
    if not summary.is_file():
        return None
    try:
        root = json.loads(summary.read_text(encoding="utf-8")).get("sketchy_root")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(root) if isinstance(root, str) and root else None


def collect(input_path: str, images: str | None) -> list[tuple[str, Path]]:
    src = Path(input_path)
    images_root = Path(images) if images else None
    if images_root is not None and not images_root.is_dir():
        raise Psc6kError(f"--images {images_root}: not a directory")
    if src.is_dir():
        items = collect_from_directory(src, images_root)
        if not items:
            raise Psc6kError(f"{src}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found under it")
        return items
    if src.is_file():
        items = collect_from_csv(src, images_root)
        if not items:
            raise Psc6kError(f"{src}: no sketches listed")
        return items
    raise Psc6kError(f"{src}: no such file or directory (expected a folder of sketches or a pair CSV)")


# --------------------------------------------------------------------------------------------
# one sketch
# --------------------------------------------------------------------------------------------

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]


def render_strip(res) -> "np.ndarray":
    """Paper Fig. 7 strip, RGB uint8 [H, 4W + 3 gaps]: sketch | mask | pseudo-parts | keypoints."""
    import cv2
    import numpy as np

    h, w = res.gray.shape
    sketch = np.repeat((res.gray * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    mask = np.where(res.mask[:, :, None], np.uint8(40), np.uint8(255)).repeat(3, axis=2)
    palette = np.array([_PALETTE[i % len(_PALETTE)] for i in range(max(int(res.parts.max()) + 1, 1))], np.uint8)
    parts = np.full((h, w, 3), 255, np.uint8)
    inside = res.parts >= 0
    parts[inside] = palette[res.parts[inside]]
    kps = sketch.copy()
    kps[res.mask & ~res.ink] = (kps[res.mask & ~res.ink] * 0.85).astype(np.uint8)
    radius = max(2, int(round(max(h, w) / 64)))
    for i, (x, y) in enumerate(res.keypoints):
        c = tuple(int(v) for v in palette[i % len(palette)])
        center = (int(round(x)), int(round(y)))
        cv2.circle(kps, center, radius + 1, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(kps, center, radius, c, -1, cv2.LINE_AA)
        cv2.putText(kps, str(i), (center[0] + radius + 1, center[1] - radius), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.3, h / 640), (0, 0, 0), 1, cv2.LINE_AA)
    gap = np.full((h, 4, 3), 255, np.uint8)
    return np.concatenate([sketch, gap, mask, gap, parts, gap, kps], axis=1)


def process_one(task):
    """Worker: ``(key, path, seed, max_dilations, close_gaps, viz_path)`` -> dict with keypoints
    or error."""
    key, path, seed, max_dilations, close_gaps, viz_path = task
    from psc6k import keypoints as K

    try:
        gray = K.load_sketch(path)
        res = K.analyze_sketch(gray, 8, seed, max_dilations=max_dilations, close_gaps_px=close_gaps)
    except K.SketchError as exc:
        return {"sketch": key, "error": exc.detail, "reason": exc.reason}
    except MemoryError:
        return {"sketch": key, "error": "out of memory", "reason": "error"}
    except Exception as exc:  # a bug must not stop a 75k-sketch batch; it is reported per sketch
        return {"sketch": key, "error": f"internal error: {type(exc).__name__}: {exc}", "reason": "error"}
    # 3 decimals (1/1000 px) keep the CSV readable; rounding cannot move a point off its pixel
    # by more than 0.0005 px
    out = {"sketch": key, "keypoints": res.keypoints.round(3), "dilation_iterations": res.dilation_iterations,
           "moved": int(res.moved.sum()), "size": list(res.gray.shape[::-1])}
    if viz_path is not None:
        try:
            import cv2

            Path(viz_path).parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(viz_path), render_strip(res)[:, :, ::-1]):
                raise OSError("cv2.imwrite failed")
        except Exception as exc:
            out["viz_error"] = f"{type(exc).__name__}: {exc}"
    return out


def _worker_init():
    # Each worker uses one BLAS and one OpenCV thread: N workers on N cores, no
    # oversubscription. This runs inside the worker processes only; the parent is untouched.
    try:
        import cv2

        cv2.setNumThreads(1)
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:
        pass


def _viz_path(viz_dir: Path, key: str) -> Path:
    rel = Path(key.replace("\\", "/").lstrip("/"))
    rel = Path(*[p for p in rel.parts if p not in ("..", ".")])
    return viz_dir / rel.with_suffix(".png")


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------

def build_keypoints(items, *, seed=0, workers=1, viz_dir=None, max_dilations=None, close_gaps=0,
                    progress=True, on_error=None):
    """Process ``(key, path)`` items; returns (results in input order, keypoints {key: [8, 2]})."""
    tasks = [(key, str(path), seed, max_dilations, close_gaps,
              str(_viz_path(Path(viz_dir), key)) if viz_dir is not None else None) for key, path in items]
    if workers == 0:
        workers = os.cpu_count() or 1
    workers = max(1, min(workers, len(tasks)))
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    bar = tqdm(total=len(tasks), unit="sketch", disable=not progress or tqdm is None,
               file=sys.stderr, dynamic_ncols=True) if tqdm is not None else None
    results = []

    def handle(r):
        results.append(r)
        if "error" in r and on_error is not None:
            on_error(r)
        if bar is not None:
            bar.update(1)

    try:
        if workers == 1:
            for t in tasks:
                handle(process_one(t))
        else:
            from concurrent.futures import ProcessPoolExecutor
            import multiprocessing as mp

            # fork is fastest where available; spawn elsewhere (same results: no shared state)
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as ex:
                chunk = max(1, min(32, len(tasks) // (workers * 8)))
                for r in ex.map(process_one, tasks, chunksize=chunk):
                    handle(r)
    finally:
        if bar is not None:
            bar.close()
    keypoints = {r["sketch"]: r["keypoints"] for r in results if "keypoints" in r}
    return results, keypoints


def run(args: argparse.Namespace) -> int:
    from psc6k.formats import write_keypoints_csv

    if args.workers < 0:
        raise Psc6kError(f"--workers must be >= 0, got {args.workers}")
    if args.close_gaps < 0:
        raise Psc6kError(f"--close-gaps must be >= 0, got {args.close_gaps}")
    if args.max_dilations is not None and args.max_dilations < 0:
        raise Psc6kError(f"--max-dilations must be >= 0, got {args.max_dilations}")
    items = collect(args.input, args.images)
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise Psc6kError(f"--out {out}: is a directory; expected a CSV file path")
    start = time.perf_counter()

    def on_error(r):  # one line per failed sketch, as it happens
        _print_err(f"psc6k build-keypoints: {r['sketch']}: {r['error']}")

    results, keypoints = build_keypoints(
        items, seed=args.seed, workers=args.workers, viz_dir=args.viz, max_dilations=args.max_dilations,
        close_gaps=args.close_gaps, progress=not args.no_progress, on_error=on_error)
    seconds = time.perf_counter() - start
    write_keypoints_csv(keypoints, out)

    failures = [{"sketch": r["sketch"], "reason": r["reason"], "error": r["error"]} for r in results if "error" in r]
    viz_errors = [{"sketch": r["sketch"], "error": r["viz_error"]} for r in results if "viz_error" in r]
    ok = [r for r in results if "keypoints" in r]
    summary = {
        "input": str(args.input),
        "out": str(out),
        "n_sketches": len(results),
        "n_ok": len(ok),
        "n_failed": len(failures),
        "failures_by_reason": dict(sorted(Counter(f["reason"] for f in failures).items())),
        "failures": failures,
        "dilation_iterations": {str(k): v for k, v in sorted(Counter(r["dilation_iterations"] for r in ok).items())},
        "keypoints_moved_onto_part": sum(r["moved"] for r in ok),
        "seed": args.seed,
        "close_gaps": args.close_gaps,
        "workers": args.workers,
        "seconds": round(seconds, 3),
        "viz": args.viz,
    }
    if viz_errors:
        summary["viz_errors"] = viz_errors
        for v in viz_errors:
            _print_err(f"psc6k build-keypoints: {v['sketch']}: could not write the --viz image: {v['error']}")
    reasons = ", ".join(f"{n} {k}" for k, n in summary["failures_by_reason"].items())
    line = (f"build-keypoints: {len(ok)} of {len(results)} sketches -> {out} in {seconds:.1f} s"
            + (f"; {len(failures)} failed ({reasons})" if failures else ""))
    if args.json:
        _print_err(line)
        print(json.dumps(summary, indent=2))
    else:
        print(line)
    if failures and not args.keep_going:
        return 1
    return 0


def _print_err(text: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    except ImportError:  # pragma: no cover
        print(text, file=sys.stderr)
