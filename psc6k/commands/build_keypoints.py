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
large pieces that stay apart after the dilation bound) gets one error line on stderr and the
batch goes on; the exit status is 1 if any sketch failed, unless ``--keep-going``.

Long runs are crash-safe: every result is appended to ``OUT.journal`` (fsync'd every
``JOURNAL_SYNC_EVERY`` results) and the final CSVs are written whole, through a temporary file
and a rename, only at the end.  ``--resume`` continues a killed run from its journal; the
result equals an uninterrupted run's, each sketch processed once.  ``--report FILE.csv``
records per sketch what the builder did (dilations, marks set aside, moved keypoints, status).
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

from psc6k.cli_errors import name_options, option_names
from psc6k.errors import Psc6kError
from psc6k.keypoints.io import refuse_photo_folder
from psc6k.sketchy import recorded_sketchy_root

HELP = "sample 8 keypoints per sketch (mask + spectral pseudo-parts)"
SECTION, ORDER = "build the benchmark", 20
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SKETCHY_MARKER = "rendered_256x256/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT",
                        help="directory of sketch images (recursive) or a pair CSV with a sketch column")
    parser.add_argument("--out", "-o", required=True, metavar="CSV", help="keypoints CSV to write (sketch,X,Y)")
    parser.add_argument("--images", metavar="ROOT", default=None,
                        help="root the CSV's paths are relative to (the Sketchy root); not given: the "
                             "CSV's folder, or the Sketchy root recorded in summary.json by build-pairs. "
                             "For a directory INPUT, output keys are made relative to ROOT")
    parser.add_argument("--workers", "-j", type=int, default=1, metavar="N",
                        help="worker processes (0 = one per CPU)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the clustering (same for every sketch)")
    parser.add_argument("--viz", metavar="DIR", default=None,
                        help="also write one PNG per sketch: sketch | mask | pseudo-parts | keypoints")
    parser.add_argument("--max-dilations", type=int, default=None, metavar="N",
                        help="bound on 3x3 dilations used to connect the drawing's pieces; not given: "
                             "1/6 of the drawing's bounding-box side (34 for a 200 px drawing)")
    parser.add_argument("--stray-gap", type=int, default=None, metavar="PX",
                        help="ink groups this far (px) from the rest, holding under 5%% of the ink and "
                             "outside the object, are stray marks and set aside; not given: 1/12 of the "
                             "image side (21 for 256x256); 0 keeps every mark (the paper read literally)")
    parser.add_argument("--report", metavar="CSV", default=None,
                        help="also write one diagnostics row per sketch: mask pixels, dilations, marks "
                             "set aside, parts connected, keypoints moved, status")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from OUT.journal (same INPUT and options)")
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
    recorded = recorded_sketchy_root(path.parent)
    if recorded is not None:
        candidates.append(recorded)
    probe = keys[:20]
    for base in candidates:
        if any((base / key).is_file() for key in probe):
            return [(key, base / key) for key in keys]
    tried = " or ".join(str(c) for c in candidates)
    raise Psc6kError(f"{path}: its sketch paths (e.g. {keys[0]!r}) do not exist relative to {tried}; "
                     "pass --images ROOT, the folder they are relative to (the Sketchy root)")


def collect(input_path: str, images: str | None) -> list[tuple[str, Path]]:
    src = Path(input_path)
    images_root = Path(images) if images else None
    if images_root is not None and not images_root.is_dir():
        raise Psc6kError(f"--images {images_root}: not a directory")
    if src.is_dir():
        items = collect_from_directory(src, images_root)
        if not items:
            raise Psc6kError(f"{src}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found under it")
        refuse_photo_folder(src, [path for _, path in items])
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
#: --viz colours (RGB): ink set aside (dust, stray marks) and mask grown by the dilations.
SET_ASIDE_RGB = (230, 0, 0)
DILATED_RGB = (120, 170, 255)

#: One --report row per sketch, in input order.
REPORT_COLUMNS = ("sketch", "status", "width", "height", "mask_px", "dilations", "max_dilations",
                  "pieces_joined", "dust_components", "stray_marks", "ink_px_set_aside",
                  "parts_connected", "keypoints_moved", "error")


def render_strip(res) -> "np.ndarray":
    """Paper Fig. 7 strip, RGB uint8 [H, 4W + 3 gaps]: sketch | mask | pseudo-parts | keypoints.

    Colour code: in the sketch panel the ink set aside (dust, stray marks) is red; in the mask
    panel the object's ink is black, the filled outline dark grey and what the dilations added
    light blue.
    """
    import cv2
    import numpy as np

    from psc6k.keypoints._morphology import fill_holes

    h, w = res.gray.shape
    sketch = np.repeat((res.gray * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    if res.set_aside is not None and res.set_aside.any():
        sketch[res.set_aside] = SET_ASIDE_RGB
    mask = np.full((h, w, 3), 255, np.uint8)
    mask[res.mask] = (70, 70, 70)
    if res.dilation_iterations:
        mask[res.mask & ~fill_holes(res.ink)] = DILATED_RGB
    mask[res.ink] = (0, 0, 0)
    palette = np.array([_PALETTE[i % len(_PALETTE)] for i in range(max(int(res.parts.max()) + 1, 1))], np.uint8)
    parts = np.full((h, w, 3), 255, np.uint8)
    inside = res.parts >= 0
    parts[inside] = palette[res.parts[inside]]
    kps = np.repeat((res.gray * 255).astype(np.uint8)[:, :, None], 3, axis=2)
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


def process_one(task) -> dict:
    """Worker: ``(key, path, options, viz_path[, board])`` -> one result record (JSON-able dict).

    ``options`` holds ``seed``, ``max_dilations``, ``stray_gap``, ``close_gaps``.  The record
    has ``sketch``, ``status`` (``"ok"`` or a :class:`SketchError` reason), the ``--report``
    fields, ``keypoints`` ([8, 2] list, 3 decimals) when ok, ``error`` when not.  ``board`` is
    ``(path, index)`` of an :class:`InFlightBoard` slot, marked started and finished.
    """
    key, path, opt, viz_path, *board = task
    if board and board[0] is not None:
        InFlightBoard.mark(*board[0], InFlightBoard.STARTED)
        try:
            return _process(key, path, opt, viz_path)
        finally:
            InFlightBoard.mark(*board[0], InFlightBoard.FINISHED)
    return _process(key, path, opt, viz_path)


def _process(key, path, opt, viz_path) -> dict:
    import multiprocessing

    from psc6k import keypoints as K
    from psc6k.keypoints._morphology import single_threaded_process
    from psc6k.keypoints.quality import n_parts_connected

    if multiprocessing.parent_process() is not None:  # a pool worker: one thread, for good
        single_threaded_process()

    try:
        gray = K.load_sketch(path)
        res = K.analyze_sketch(gray, 8, opt["seed"], max_dilations=opt["max_dilations"],
                               stray_gap=opt["stray_gap"], close_gaps_px=opt["close_gaps"])
    except K.SketchError as exc:
        return {"sketch": key, "status": exc.reason, "error": exc.detail}
    except MemoryError:
        return {"sketch": key, "status": "error", "error": "out of memory"}
    except Exception as exc:  # a bug must not stop a 75k-sketch batch; it is reported per sketch
        return {"sketch": key, "status": "error", "error": f"internal error: {type(exc).__name__}: {exc}"}
    # 3 decimals (1/1000 px) keep the CSV readable; rounding cannot move a point off its pixel
    # by more than 0.0005 px
    out = {"sketch": key, "status": "ok", "keypoints": res.keypoints.round(3).tolist(),
           "width": int(gray.shape[1]), "height": int(gray.shape[0]), "mask_px": int(res.mask.sum()),
           "dilations": int(res.dilation_iterations), "max_dilations": int(res.max_dilations),
           "pieces_joined": int(res.n_pieces) if res.dilation_iterations else 0,
           "dust_components": int(res.n_dust), "stray_marks": int(res.n_stray),
           "ink_px_set_aside": int(res.set_aside.sum()) if res.set_aside is not None else 0,
           "parts_connected": int(n_parts_connected(res.parts, 8)),
           "keypoints_moved": int(res.moved.sum())}
    if viz_path is not None:
        try:
            import cv2

            Path(viz_path).parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(viz_path), render_strip(res)[:, :, ::-1]):
                raise OSError("cv2.imwrite failed")
        except Exception as exc:
            out["viz_error"] = f"{type(exc).__name__}: {exc}"
    return out


def _viz_path(viz_dir: Path, key: str) -> Path:
    rel = Path(key.replace("\\", "/").lstrip("/"))
    rel = Path(*[p for p in rel.parts if p not in ("..", ".")])
    return viz_dir / rel.with_suffix(".png")


# --------------------------------------------------------------------------------------------
# the journal: crash-safe incremental output
# --------------------------------------------------------------------------------------------

JOURNAL_FORMAT = "psc6k-build-keypoints-journal/1"
#: Results between two fsyncs of the journal (a kill loses at most these; they are redone).
JOURNAL_SYNC_EVERY = 64


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".journal")


class Journal:
    """Append-only JSON-lines record of a run: a header line with the settings, then one
    result record per sketch in input order.  A torn last line (a kill mid-write) is ignored
    on reading; the sketch is simply processed again."""

    def __init__(self, path: Path, settings: dict, resume: bool):
        self.path = path
        self.done: set[str] = set()
        if path.exists() and not resume:
            raise Psc6kError(f"{path}: an interrupted run's journal is there; pass --resume to continue "
                             "it, or delete it to start over")
        if resume and path.exists():
            good = self._check_header(settings)  # a journal with no record yet keeps its header
            for offset, rec in self._records():
                self.done.add(rec["sketch"])
                good = offset
            self.fh = open(path, "r+b")
            self.fh.truncate(good)  # drop a torn last line
            self.fh.seek(good)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = open(path, "wb")
            self.fh.write((json.dumps({"format": JOURNAL_FORMAT, "settings": settings}) + "\n").encode())
            self.sync()
        self.pending = 0

    def _check_header(self, settings):
        try:
            with open(self.path, "rb") as fh:
                line = fh.readline()
                header = json.loads(line)
        except (OSError, ValueError) as exc:
            raise Psc6kError(f"{self.path}: line 1: not a build-keypoints journal ({exc}); delete it "
                             "to start over") from None
        if not isinstance(header, dict) or header.get("format") != JOURNAL_FORMAT:
            raise Psc6kError(f"{self.path}: line 1: not a build-keypoints journal; delete it to start over")
        if header.get("settings") != settings:
            old = header.get("settings") or {}
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise Psc6kError(f"{self.path}: the interrupted run used other settings ({', '.join(diff)}); "
                             "resume with the same INPUT and options, or delete the journal")
        if not line.endswith(b"\n"):
            raise Psc6kError(f"{self.path}: line 1: not a build-keypoints journal (torn header); delete it "
                             "to start over")
        return len(line)

    def _records(self):
        """(end offset, record) of every complete record after the header."""
        with open(self.path, "rb") as fh:
            fh.readline()
            offset = fh.tell()
            for line in fh:
                if not line.endswith(b"\n"):
                    break
                try:
                    rec = json.loads(line)
                except ValueError:
                    break
                if not isinstance(rec, dict) or "sketch" not in rec:
                    break
                offset += len(line)
                yield offset, rec

    def records(self):
        for _, rec in self._records():
            yield rec

    def append(self, rec: dict) -> None:
        self.fh.write((json.dumps(rec, separators=(",", ":")) + "\n").encode())
        self.pending += 1
        if self.pending >= JOURNAL_SYNC_EVERY:
            self.sync()

    def sync(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.pending = 0

    def close(self) -> None:
        if not self.fh.closed:
            self.sync()
            self.fh.close()


def _write_atomically(path: Path, header, rows) -> None:
    """Write a CSV through ``path.tmp`` + fsync + rename: never a half-written ``path``.  Cells
    pass :func:`psc6k.csvsafe.safe_row` (no spreadsheet formulas), as in every psc6k CSV."""
    from psc6k.csvsafe import safe_row

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(safe_row(header))
        writer.writerows(safe_row(r) for r in rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------

class WorkerDied(Psc6kError):
    """A worker process died (killed by a signal, the out-of-memory killer): the pool is gone.

    ``in_flight`` are the keys of the sketches being processed at that moment (one of them
    was the dying worker's), ``n_done`` the results received before."""

    def __init__(self, in_flight: list[str], n_done: int):
        self.in_flight, self.n_done = in_flight, n_done
        if in_flight:
            shown = ", ".join(in_flight[:4]) + (f" and {len(in_flight) - 4} more" if len(in_flight) > 4 else "")
            what = f"while processing {shown}"
        else:
            what = "between sketches"
        super().__init__(f"a worker process died abruptly (killed by a signal or the out-of-memory killer) {what}")


class InFlightBoard:
    """Which sketches the worker processes are on: one byte per task in a small temporary file
    (0 = waiting, 1 = started, 2 = finished), written by the workers with ``os.pwrite``.

    When a worker dies, the pool only says *that* it died; the board says which sketches were
    being processed (at most one per worker), so the error can name them.  Cost: two one-byte
    writes per sketch.
    """

    STARTED, FINISHED = b"\x01", b"\x02"
    _fds: dict = {}  # per worker process: board path -> open descriptor

    def __init__(self, n: int):
        import tempfile

        fd, self.path = tempfile.mkstemp(prefix="psc6k-build-keypoints-", suffix=".inflight")
        with os.fdopen(fd, "wb") as fh:
            fh.truncate(n)

    def slot(self, index: int) -> tuple[str, int]:
        return self.path, index

    @classmethod
    def mark(cls, path: str, index: int, state: bytes) -> None:
        fd = cls._fds.get(path)
        if fd is None:
            fd = cls._fds[path] = os.open(path, os.O_WRONLY)
        os.pwrite(fd, state, index)

    def started(self) -> list[int]:
        """Indices of the tasks started and not finished."""
        with open(self.path, "rb") as fh:
            data = fh.read()
        return [i for i, b in enumerate(data) if b == self.STARTED[0]]

    def close(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass


def build_keypoints(items, *, seed=0, workers=1, viz_dir=None, max_dilations=None, stray_gap=None,
                    close_gaps=0, progress=True, on_result=None):
    """Process ``(key, path)`` items; yields one result record per item, in input order.

    ``on_result(record)`` is called as each arrives (the command journals and reports there).

    Raises
    ------
    WorkerDied
        A worker process died (its sketch cannot be told from the pool's error; the ones in
        flight are named).  The records yielded before are complete.
    """
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    from psc6k.parallel import map_ordered, resolve_workers

    opt = {"seed": seed, "max_dilations": max_dilations, "stray_gap": stray_gap, "close_gaps": close_gaps}
    pooled = resolve_workers(workers, len(items)) > 1
    try:
        board = InFlightBoard(len(items)) if pooled else None
    except OSError:  # no writable temporary folder: a dead worker's sketches go unnamed
        board = None
    tasks = [(key, str(path), opt, str(_viz_path(Path(viz_dir), key)) if viz_dir is not None else None,
              board.slot(i) if board is not None else None)
             for i, (key, path) in enumerate(items)]
    n_done = 0
    try:
        with tqdm(total=len(tasks), unit="sketch", disable=not progress, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            for rec in map_ordered(process_one, tasks, workers):
                if on_result is not None:
                    on_result(rec)
                n_done += 1
                bar.update(1)
                yield rec
    except BrokenProcessPool:
        in_flight = [tasks[i][0] for i in board.started()] if board is not None else []
        raise WorkerDied(in_flight, n_done) from None
    finally:
        if board is not None:
            board.close()


def run(args: argparse.Namespace) -> int:
    from psc6k.formats import format_list

    if args.workers < 0:
        raise Psc6kError(f"--workers must be >= 0, got {args.workers}")
    if args.close_gaps < 0:
        raise Psc6kError(f"--close-gaps must be >= 0, got {args.close_gaps}")
    if args.max_dilations is not None and args.max_dilations < 0:
        raise Psc6kError(f"--max-dilations must be >= 0, got {args.max_dilations}")
    if args.stray_gap is not None and args.stray_gap < 0:
        raise Psc6kError(f"--stray-gap must be >= 0, got {args.stray_gap}")
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise Psc6kError(f"--out {out}: is a directory; expected a CSV file path")
    report = Path(args.report) if args.report else None
    if report is not None and report.exists() and report.is_dir():
        raise Psc6kError(f"--report {report}: is a directory; expected a CSV file path")
    if report is not None and report.resolve() == out.resolve():
        raise Psc6kError(f"--report {report}: is the --out file; give the report its own path")
    items = collect(args.input, args.images)
    settings = {"input": str(Path(args.input).resolve()), "images": args.images, "seed": args.seed,
                "max_dilations": args.max_dilations, "stray_gap": args.stray_gap,
                "close_gaps": args.close_gaps, "n_sketches": len(items)}
    journal = Journal(journal_path(out), settings, args.resume)
    todo = [(k, p) for k, p in items if k not in journal.done]
    if journal.done:
        _print_err(f"psc6k build-keypoints: resuming: {len(items) - len(todo)} of {len(items)} sketches "
                   f"already done ({journal.path})")
    start = time.perf_counter()
    options = _option_names()  # a sketch's error names the builder's parameters; say our options

    def on_result(r):
        journal.append(r)
        if r["status"] != "ok":  # one line per failed sketch, as it happens
            _print_err(f"psc6k build-keypoints: {r['sketch']}: {name_options(r['error'], options)}")
        if "viz_error" in r:
            _print_err(f"psc6k build-keypoints: {r['sketch']}: could not write the --viz image: {r['viz_error']}")

    try:
        for _ in build_keypoints(todo, seed=args.seed, workers=args.workers, viz_dir=args.viz,
                                 max_dilations=args.max_dilations, stray_gap=args.stray_gap,
                                 close_gaps=args.close_gaps, progress=not args.no_progress,
                                 on_result=on_result):
            pass
    except WorkerDied as exc:
        done = len(items) - len(todo) + exc.n_done
        raise Psc6kError(f"{exc}; the {done} of {len(items)} sketches finished are kept in {journal.path}: "
                         "run the same command with --resume to continue") from None
    finally:
        journal.close()
    seconds = time.perf_counter() - start

    # the journal holds every sketch once, in input order: stream it into the final files
    summary = _finish(journal, out, report, format_list)
    summary.update({"input": str(args.input), "out": str(out), "report": args.report,
                    "seed": args.seed, "close_gaps": args.close_gaps, "stray_gap": args.stray_gap,
                    "workers": args.workers, "seconds": round(seconds, 3), "viz": args.viz,
                    "resumed": len(items) - len(todo)})
    journal.path.unlink()
    ok, n, failures = summary["n_ok"], summary["n_sketches"], summary["failures"]
    reasons = ", ".join(f"{c} {k}" for k, c in summary["failures_by_reason"].items())
    line = (f"build-keypoints: {ok} of {n} sketches -> {out} in {seconds:.1f} s; "
            f"{summary['dilated']} dilated (max {summary['max_dilations_used']}), "
            f"{summary['with_marks_set_aside']} with marks set aside "
            f"({summary['dust_components']} dust, {summary['stray_marks']} stray, "
            f"{summary['ink_px_set_aside']} ink px), {summary['keypoints_moved_onto_part']} keypoints "
            f"moved onto their part" + (f"; {len(failures)} failed ({reasons})" if failures else ""))
    if args.json:
        _print_err(line)
        print(json.dumps(summary, indent=2))
    else:
        print(line)
    if failures and not args.keep_going:
        return 1
    return 0


def _finish(journal: Journal, out: Path, report: Path | None, format_list) -> dict:
    """Write the keypoints CSV (and the report) from the journal; return the summary."""
    failures, reasons, dil = [], Counter(), Counter()
    totals = Counter()
    viz_errors = []

    def kp_rows():
        for rec in journal.records():
            totals["n"] += 1
            if rec["status"] != "ok":
                failures.append({"sketch": rec["sketch"], "reason": rec["status"], "error": rec["error"]})
                reasons[rec["status"]] += 1
                continue
            totals["ok"] += 1
            dil[rec["dilations"]] += 1
            for k in ("dust_components", "stray_marks", "ink_px_set_aside", "keypoints_moved"):
                totals[k] += rec[k]
            totals["with_marks"] += bool(rec["dust_components"] or rec["stray_marks"])
            if "viz_error" in rec:
                viz_errors.append({"sketch": rec["sketch"], "error": rec["viz_error"]})
            kps = rec["keypoints"]
            yield [rec["sketch"], format_list(p[0] for p in kps), format_list(p[1] for p in kps)]

    from psc6k.formats import KEYPOINT_COLUMNS

    _write_atomically(out, KEYPOINT_COLUMNS, kp_rows())
    if report is not None:
        _write_atomically(report, REPORT_COLUMNS,
                          ([rec.get(c, "") for c in REPORT_COLUMNS] for rec in journal.records()))
    summary = {
        "n_sketches": totals["n"], "n_ok": totals["ok"], "n_failed": len(failures),
        "failures_by_reason": dict(sorted(reasons.items())), "failures": failures,
        "dilation_iterations": {str(k): v for k, v in sorted(dil.items())},
        "dilated": sum(v for k, v in dil.items() if k), "max_dilations_used": max(dil, default=0),
        "with_marks_set_aside": totals["with_marks"], "dust_components": totals["dust_components"],
        "stray_marks": totals["stray_marks"], "ink_px_set_aside": totals["ink_px_set_aside"],
        "keypoints_moved_onto_part": totals["keypoints_moved"],
    }
    if viz_errors:
        summary["viz_errors"] = viz_errors
    return summary


def _option_names() -> dict[str, str]:
    """This command's options by parameter name (:func:`psc6k.cli_errors.option_names`)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return option_names(parser)


def _print_err(text: str) -> None:
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)
