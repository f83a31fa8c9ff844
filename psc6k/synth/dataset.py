"""Generate a whole synthetic Sketchy-shaped benchmark (see ``docs/synth.md``).

Work is split by photo: each task renders one photo and all its sketches from a generator seeded
by ``(seed, category, photo index, sketch number)``, so the bytes do not depend on the number of
workers or the order in which tasks finish; the parent process writes every file in a fixed order.
"""

from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from psc6k import IMAGE_SIZE, NUM_KEYPOINTS, __version__, formats
from psc6k import keypoints as keypoint_builder
from psc6k.csvsafe import safe_row
from psc6k.errors import ParameterError, Psc6kError
from psc6k.parallel import map_ordered
from psc6k.sketchy import INVALID_LISTS, class_index, photo_relpath, sketch_relpath
from psc6k.submission import Submission, save_submission
from psc6k.synth import realphotos, render
from psc6k.synth.shapes import TEMPLATES, make_object, template_of
from psc6k.synth.warp import SmoothWarp, random_warp, warp_flows

#: Version of the generator; bumped whenever the same seed would give different bytes.
SYNTH_VERSION = 1
JPEG_QUALITY = 90
#: PNG compression level of sketches (fixed: the bytes depend on it).
PNG_COMPRESSION = 6
#: Probability that a photo also gets one deliberately broken sketch (listed in info/invalid-*.txt).
BROKEN_PROBABILITY = 0.08
#: Drawings tried per valid test sketch before giving up (see make_photo_record).
MAX_ATTEMPTS = 6
#: Kinds of broken sketches and the Sketchy invalid list that names them.
BROKEN_KINDS = (("empty", "error"), ("scribble", "error"), ("pose", "pose"), ("fragment", "ambiguous"),
                ("context", "context"))
#: Files and folders the generator owns inside the output folder (``--force`` removes only these).
OUTPUTS = ("info", "rendered_256x256", "test_pairs_ps.csv", "test_pairs_st.csv", "train_pairs_ps.csv",
           "train_pairs_st.csv", "gt_flows.npz", "clicks.csv", "keypoints.csv", "synth.json")


#: Order in which categories are taken by ``--categories C`` (real-photo ones only when
#: scikit-image is installed), followed by numbered variants of the procedural templates.
#: ``robot`` comes first: it is not a Sketchy name, so no set of synthetic categories is mistaken
#: for a subset of Sketchy's (whose ``class`` would index the 125 Sketchy names).
CATEGORY_ORDER = ("robot", "fish", "astronaut", "butterfly", "cup", "house", "bird", "coffee_cup", "tree",
                  "snowman", "mushroom", "horse", "desk_lamp", "kite", "flower", "car", "guitar", "turtle",
                  "cactus", "rocket_ship")


def category_names(n: int) -> list[str]:
    """The first ``n`` synthetic categories (in :data:`CATEGORY_ORDER`, then ``fish_v2``, ...)."""
    if n < 1:
        raise ParameterError(f"`categories` must be at least 1, got {n}", param="categories")
    real = set(realphotos.available())
    out = [c for c in CATEGORY_ORDER if c in TEMPLATES or c in real]
    v = 2
    while len(out) < n:
        out.extend(f"{t}_v{v}" for t in TEMPLATES)
        v += 1
    return out[:n]


def photo_id(category_code: int, index: int) -> str:
    """Sketchy-like photo id, e.g. ``syn0003_00012`` (stable for a category across runs)."""
    return f"syn{category_code:04d}_{index + 1:05d}"


def _code(category: str) -> int:
    if category in realphotos.REAL_CATEGORIES:
        return 900 + list(realphotos.REAL_CATEGORIES).index(category) + 1
    names = list(TEMPLATES)
    base, variant = template_of(category)
    return (variant - 1) * len(names) + names.index(base) + 1


def make_scene(category: str, rng: np.random.Generator):
    """One photo of ``category``: (RGB uint8 [256, 256, 3], its object, its drawable outline)."""
    if category in realphotos.REAL_CATEGORIES:
        return realphotos.make_scene(category, rng)
    obj = make_object(category, rng)
    layers = render.render_photo(obj, rng)
    return layers.image, obj, render.outlines(layers, obj)


def _rng(*keys) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]))


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


# ------------------------------------------------------------------------------ one photo
@dataclass
class SketchRecord:
    relpath: str
    png: bytes
    invalid: str | None = None               # Sketchy invalid list name, or None when valid
    sketch_kps: np.ndarray | None = None      # [8, 2] sketch pixels (test split)
    photo_kps: np.ndarray | None = None       # [8, 2] photo pixels = warp(sketch_kps)
    flows: tuple | None = None                # (sketch_to_photo, photo_to_sketch) [F, F, 2]
    warp: SmoothWarp | None = None            # sketch -> photo (not written; for checks)


@dataclass
class PhotoRecord:
    category: str
    relpath: str
    split: str
    jpeg: bytes
    sketches: list = field(default_factory=list)


def _encode_png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    assert ok
    return buf.tobytes()


def _encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality),
                                                      cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    assert ok
    return buf.tobytes()


def fit_warp(strokes: list, rng: np.random.Generator, *, margin: float = 3.0, attempts: int = 8) -> SmoothWarp:
    """A random sketch -> photo warp under which every stroke lands inside the sketch frame.

    Tries random warps of decreasing strength; the last resort is a pure translation by the
    largest shift that keeps the drawing inside (never the identity unless nothing else fits).
    """
    pts = np.vstack([s.points for s in strokes]) if strokes else np.zeros((0, 2))
    lo_ok, hi_ok = margin, IMAGE_SIZE - 1 - margin
    for attempt in range(attempts):
        strength = 1.0 - 0.08 * attempt
        warp = random_warp(rng, strength=strength)
        if not len(pts):
            return warp
        q = warp.inverse(pts, tol=1e-2)
        if q.min() >= lo_ok and q.max() <= hi_ok:
            return warp
    # translation only, as large as fits
    lo, hi = pts.min(0), pts.max(0)
    room_lo, room_hi = lo - lo_ok, hi_ok - hi  # how far the drawing may move left/up, right/down
    shift = np.where(room_hi > room_lo, np.maximum(room_hi, 0), -np.maximum(room_lo, 0)) * 0.9
    return SmoothWarp(np.array([[1.0, 0, -shift[0]], [0, 1.0, -shift[1]]]))


def _broken_sketch(kind: str, outline, rng, pen) -> np.ndarray:
    """A deliberately invalid sketch of ``kind`` (see :data:`BROKEN_KINDS`)."""
    if kind == "empty":
        return np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 255, np.uint8)
    if kind == "scribble":
        return render.draw_strokes(render.scribble_strokes(rng, pen), rng)
    lines = render.object_lines(outline, rng)
    strokes = render.humanize(lines, rng, pen=pen)
    strokes = render.warp_strokes(strokes, fit_warp(strokes, rng))
    if kind == "fragment":  # two short strokes: nobody can tell what it is
        strokes = [s for s in strokes if len(s.points) > 4][:2]
        return render.draw_strokes(strokes, rng)
    img = render.draw_strokes(strokes, rng)
    if kind == "pose":  # drawn upside down
        return np.ascontiguousarray(img[::-1])
    # context: the object plus a whole scene around it
    extra = []
    for _ in range(6):
        y = rng.uniform(5, 250)
        extra.append(render.Stroke(np.linspace([rng.uniform(0, 40), y], [rng.uniform(215, 255), y + rng.uniform(-20, 20)], 30),
                                   np.full(30, pen)))
    c = rng.uniform(30, 70, 2)
    t = np.linspace(0, 2 * np.pi, 30)
    extra.append(render.Stroke(c + 18 * np.stack([np.cos(t), np.sin(t)], -1), np.full(30, pen)))
    return np.minimum(img, render.draw_strokes(extra, rng))


def make_photo_record(category: str, index: int, split: str, *, seed: int, sketches_per_photo: int,
                      flow_size: int, jpeg_quality: int = JPEG_QUALITY, force_broken: int | None = None,
                      keypoints: bool = True) -> PhotoRecord:
    """Render one photo and its sketches (valid ones, plus maybe one broken) with ground truth.

    ``force_broken``: index into :data:`BROKEN_KINDS` of a broken sketch this photo must get
    (``generate`` asks for one of each kind on the first photos), else chance decides.
    """
    code = _code(category)
    pid = photo_id(code, index)
    rng = _rng(seed, code, index, 0)
    image, obj, outline = make_scene(category, rng)
    rec = PhotoRecord(category, photo_relpath(category, pid), split, _encode_jpeg(image, jpeg_quality))
    n_total = sketches_per_photo
    broken_at = -1
    if force_broken is not None or rng.random() < BROKEN_PROBABILITY:
        n_total += 1
        broken_at = int(rng.integers(0, n_total))
    for n in range(n_total):
        srng = _rng(seed, code, index, n + 1)
        sid = f"{pid}-{n + 1}"
        pen = float(srng.uniform(0.9, 2.0))
        if n == broken_at:
            pick = int(srng.integers(0, len(BROKEN_KINDS)))
            kind, lst = BROKEN_KINDS[pick if force_broken is None else force_broken % len(BROKEN_KINDS)]
            img = _broken_sketch(kind, outline, srng, pen)
            rec.sketches.append(SketchRecord(sketch_relpath(category, sid), _encode_png(img), invalid=lst))
            continue
        want_kps = split == "test" and keypoints
        for attempt in range(MAX_ATTEMPTS):
            # a drawing whose strokes the keypoint builder cannot join into one object is redrawn:
            # later attempts without extra strokes (what usually stands apart), the last ones as
            # an unbroken outer contour
            arng = srng if attempt == 0 else _rng(seed, code, index, n + 1, attempt)
            if attempt < MAX_ATTEMPTS - 2:
                lines = render.object_lines(outline, arng)
                strokes = render.humanize(lines, arng, pen=pen)
                if attempt < 2:
                    strokes += render.extra_strokes(obj, arng, pen=pen)
            else:  # last resorts: the outer contour alone, unbroken
                lines = [(c, True) for c in outline.contours]
                strokes = render.humanize(lines, arng, pen=pen, gap_p=0.0, omit_p=0.0)
            warp = fit_warp(strokes, arng)
            img = render.draw_strokes(render.warp_strokes(strokes, warp), arng)
            if not want_kps:
                break
            try:
                kps_s = _sample_keypoints(img, seed=_crc(sid) ^ (seed & 0x7FFFFFFF))
            except Psc6kError as exc:  # psc6k.keypoints.SketchError
                failure = exc
                continue
            break
        else:
            raise Psc6kError(f"{sid}: no drawing usable by the keypoint builder after {MAX_ATTEMPTS} "
                             f"attempts (last: {failure})")
        sk = SketchRecord(sketch_relpath(category, sid), _encode_png(img), warp=warp)
        if want_kps:
            kps_s = np.round(kps_s, 3)
            kps_p = np.round(warp.forward(kps_s), 3)
            # a keypoint on an overshooting stroke may map a hair outside the photo; clicks can't
            kps_p = np.clip(kps_p, 0.0, IMAGE_SIZE - 1.0)
            sk.sketch_kps, sk.photo_kps = kps_s, kps_p
            sk.flows = warp_flows(warp, flow_size)
        rec.sketches.append(sk)
    return rec


def _sample_keypoints(img: np.ndarray, seed: int) -> np.ndarray:
    # the keypoint builder of SPEC §4 A.1, looked up when called (tests replace it)
    return keypoint_builder.sample_keypoints(img, k=NUM_KEYPOINTS, seed=int(seed) & 0x7FFFFFFF)


def _task(args):
    category, index, split, kw = args
    return make_photo_record(category, index, split, **kw)


# ------------------------------------------------------------------------------ clicks
def simulate_clicks(photo: list, sketch: list, photo_kps: np.ndarray, seed: int, *,
                    outlier_rate: float = 0.01, per_keypoint: int = 3, trials_per_participant: int = 125):
    """Simulated raw crowd clicks (the annotation app's export format).

    Each (pair, keypoint) gets ``per_keypoint`` clicks from distinct simulated participants; a
    participant clicks the true point plus Gaussian noise of their own spread (1.5-5 px), and a
    fraction ``outlier_rate`` of clicks are gross errors (elsewhere on the photo).

    Returns
    -------
    pandas.DataFrame with :data:`psc6k.formats.CLICK_COLUMNS` plus ``is_outlier`` (the truth).
    """
    import pandas as pd

    rng = _rng(seed, 0xC11C)
    n = len(photo)
    n_clicks = n * NUM_KEYPOINTS * per_keypoint
    n_part = max(per_keypoint, int(np.ceil(n_clicks / trials_per_participant)))
    sigma = rng.uniform(1.5, 5.0, n_part)
    names = [f"P{i + 1:04d}" for i in range(n_part)]
    rows = []
    base = np.datetime64("2023-03-01T09:00:00", "ms")
    t = np.zeros(n_part)
    for i in range(n):
        for k in range(NUM_KEYPOINTS):
            who = rng.choice(n_part, per_keypoint, replace=False)
            for p in who:
                xy = photo_kps[i, k] + rng.normal(0, sigma[p], 2)
                outlier = rng.random() < outlier_rate
                if outlier:
                    ang = rng.uniform(0, 2 * np.pi)
                    xy = photo_kps[i, k] + rng.uniform(50, 140) * np.array([np.cos(ang), np.sin(ang)])
                xy = np.clip(np.round(xy, 1), 0, IMAGE_SIZE - 1)
                rt = float(np.round(rng.lognormal(np.log(2200), 0.4)))
                t[p] += rt + 800
                stamp = str(base + np.timedelta64(int(t[p]) + int(p) * 3_600_000, "ms")) + "Z"
                rows.append((names[p], photo[i], sketch[i], k, float(xy[0]), float(xy[1]), rt, stamp, int(outlier)))
    return pd.DataFrame(rows, columns=["participant", "photo", "sketch", "keypoint", "x", "y", "rt_ms",
                                       "created_at", "is_outlier"])


# ------------------------------------------------------------------------------ the whole set
@dataclass
class SynthSummary:
    out: str
    categories: list
    n_test_pairs: int
    n_train_pairs: int
    n_photos: int
    n_sketches: int
    n_invalid: int
    n_clicks: int
    flow_size: int
    seed: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise Psc6kError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ParameterError(f"{out}: folder exists and is not empty; choose another `out`, or `force` to "
                                 f"replace only the files synth writes ({', '.join(OUTPUTS)})",
                                 param=("out", "force"))
        for name in OUTPUTS:
            p = out / name
            try:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif p.exists() or p.is_symlink():
                    p.unlink()
            except OSError as exc:
                raise ParameterError(f"{p}: cannot remove it for `force`: {exc.strerror or exc}", param="force") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".psc6k_write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise Psc6kError(f"{out}: cannot write to this folder ({exc.strerror or exc})") from None


def generate(out, *, categories: int = 10, photos_per_category: int = 10, sketches_per_photo: int = 5,
             train_photos_per_category: int = 2, seed: int = 0, workers: int = 1, flow_size: int = 32,
             jpeg_quality: int = JPEG_QUALITY, force: bool = False, progress: bool = True,
             clicks: bool = True) -> SynthSummary:
    """Write a synthetic Sketchy-shaped benchmark with exact ground truth into ``out``.

    Parameters
    ----------
    out : path-like
        Output folder (created; must be empty unless ``force``).
    categories : int
        Number of categories (``category_names(categories)``).
    photos_per_category : int
        Test photos per category (listed in ``info/testset.txt``).
    sketches_per_photo : int
        Valid sketches per photo; each test photo-sketch pair is one annotated pair.
    train_photos_per_category : int
        Extra photos per category, not in the test set, with their sketches (train pairs).
    seed : int
        Same seed and arguments -> byte-identical output, whatever ``workers``.
    workers : int
        Processes rendering photos in parallel.
    flow_size : int
        Side of the ground-truth flow grids in ``gt_flows.npz`` (``align_corners=True``).

    Returns
    -------
    SynthSummary
    """
    _check_arguments(photos_per_category=photos_per_category, sketches_per_photo=sketches_per_photo,
                     train_photos_per_category=train_photos_per_category, workers=workers, flow_size=flow_size,
                     jpeg_quality=jpeg_quality)
    names = category_names(int(categories))
    out = Path(out)
    _prepare_out(out, force)

    kw = dict(seed=int(seed), sketches_per_photo=int(sketches_per_photo), flow_size=int(flow_size),
              jpeg_quality=int(jpeg_quality))
    tasks = _photo_tasks(names, photos_per_category, train_photos_per_category, kw)

    from tqdm import tqdm

    written = _Written(out)
    bar = tqdm(total=len(tasks), desc="psc6k synth", unit="photo", disable=not progress)
    try:
        # one heavy task at a time per worker (chunksize 1); psc6k.parallel says why spawn
        for rec in map_ordered(_task, tasks, int(workers), chunksize=1):
            written.add(rec)
            bar.update(1)
    finally:
        bar.close()

    cats = tuple(sorted(names))
    if not written.test_photo:
        raise Psc6kError("no valid test pairs were generated")  # cannot happen with >= 1 sketch per photo
    n_clicks = _write_pairs_and_truth(out, written, cats, seed=int(seed), clicks=clicks)
    _write_info(out, written, cats)
    summary = SynthSummary(str(out), list(cats), len(written.test_photo), len(written.train_photo),
                           len(tasks), written.n_sketches, sum(len(v) for v in written.invalid.values()), n_clicks,
                           int(flow_size), int(seed))
    meta = {"generator": "psc6k synth", "synth_version": SYNTH_VERSION, "psc6k_version": __version__,
            "arguments": {"categories": int(categories), "photos_per_category": int(photos_per_category),
                          "sketches_per_photo": int(sketches_per_photo),
                          "train_photos_per_category": int(train_photos_per_category), "seed": int(seed),
                          "flow_size": int(flow_size), "jpeg_quality": int(jpeg_quality)},
            "summary": {k: v for k, v in summary.to_dict().items() if k != "out"}}
    _write_text(out / "synth.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return summary


def _check_arguments(*, photos_per_category, sketches_per_photo, train_photos_per_category, workers, flow_size,
                     jpeg_quality) -> None:
    for name, v, lo in (("photos_per_category", photos_per_category, 1), ("sketches_per_photo", sketches_per_photo, 1),
                        ("train_photos_per_category", train_photos_per_category, 0), ("workers", workers, 1),
                        ("flow_size", flow_size, 2)):
        if int(v) < lo:
            raise ParameterError(f"`{name}` must be at least {lo}, got {v}", param=name)
    if not 1 <= jpeg_quality <= 100:
        raise ParameterError(f"`jpeg_quality` must be in 1..100, got {jpeg_quality}", param="jpeg_quality")


def _photo_tasks(names, photos_per_category: int, train_photos_per_category: int, kw: dict) -> list:
    """``(category, index, split, options)`` per photo, categories sorted, test photos first."""
    tasks = []
    for ci, cat in enumerate(sorted(names)):
        for i in range(photos_per_category + train_photos_per_category):
            split = "test" if i < photos_per_category else "train"
            # the first photo of each of the first categories gets one broken sketch of each kind
            forced = ci if (i == 0 and ci < len(BROKEN_KINDS)) else None
            tasks.append((cat, i, split, dict(kw, force_broken=forced)))
    return tasks


class _Written:
    """Writes each photo's files as its record arrives (in task order) and keeps what the
    annotation files, lists and stats need."""

    def __init__(self, out: Path):
        self.out = out
        self.test_photo, self.test_sketch, self.kps_p, self.kps_s, self.s2p, self.p2s = [], [], [], [], [], []
        self.train_photo, self.train_sketch, self.testset, self.stats = [], [], [], []
        self.invalid = {name: [] for name in INVALID_LISTS}
        self.n_sketches = 0

    def add(self, rec: PhotoRecord) -> None:
        _write(self.out / rec.relpath, rec.jpeg)
        if rec.split == "test":
            self.testset.append(f"{rec.category}/{Path(rec.relpath).name}")
        for sk in rec.sketches:
            _write(self.out / sk.relpath, sk.png)
            self.n_sketches += 1
            sid = Path(sk.relpath).stem
            self.stats.append((rec.category, sid, sk.invalid))
            if sk.invalid:
                self.invalid[sk.invalid].append(sid)
            elif rec.split == "test":
                self.test_photo.append(rec.relpath)
                self.test_sketch.append(sk.relpath)
                self.kps_p.append(sk.photo_kps)
                self.kps_s.append(sk.sketch_kps)
                self.s2p.append(sk.flows[0])
                self.p2s.append(sk.flows[1])
            else:
                self.train_photo.append(rec.relpath)
                self.train_sketch.append(sk.relpath)


def _write_pairs_and_truth(out: Path, w: _Written, cats: tuple, *, seed: int, clicks: bool) -> int:
    """The PSC6K CSVs, ``keypoints.csv``, ``gt_flows.npz`` and (``clicks``) ``clicks.csv``; the number
    of clicks written."""
    ann = formats.Annotations.from_arrays(w.test_photo, w.test_sketch, np.stack(w.kps_p), np.stack(w.kps_s),
                                          categories=cats)
    formats.write_test_pairs_ps(ann, out / "test_pairs_ps.csv")
    formats.write_test_pairs_st(ann, out / "test_pairs_st.csv")
    formats.write_keypoints_csv(dict(zip(w.test_sketch, w.kps_s)), out / "keypoints.csv")
    if w.train_photo:
        tp = formats.TrainPairs.from_paths(w.train_photo, w.train_sketch, categories=cats)
        formats.write_train_pairs_ps(tp, out / "train_pairs_ps.csv")
        formats.write_train_pairs_st(tp, out / "train_pairs_st.csv")
    gt = Submission("ground_truth", "flow", list(w.test_photo), list(w.test_sketch), np.stack(w.s2p), np.stack(w.p2s))
    save_submission(gt, out / "gt_flows.npz")
    del gt
    w.s2p, w.p2s = [], []  # the flows are the bulk of the memory
    if not clicks:
        return 0
    df = simulate_clicks(w.test_photo, w.test_sketch, ann.photo_kps, seed)
    formats.write_clicks(df, out / "clicks.csv")
    return len(df)


def _write_info(out: Path, w: _Written, cats: tuple) -> None:
    """Sketchy's ``info/`` folder: ``testset.txt``, the ``invalid-*.txt`` lists and ``stats.csv``."""
    info = out / "info"
    info.mkdir(exist_ok=True)
    _write_text(info / "testset.txt", "".join(f"{line}\n" for line in w.testset))
    for name, ids in w.invalid.items():
        _write_text(info / f"invalid-{name}.txt", "".join(f"{i}\n" for i in ids))
    lines = ["Category,CategoryID,ImageNetID,SketchID,Error?,Context?,Ambiguous?,WrongPose?\n"]
    for cat, sid, bad in w.stats:
        pid, _, num = sid.rpartition("-")
        flags = [int(bad == k) for k in ("error", "context", "ambiguous", "pose")]
        lines.append(",".join(safe_row([cat, str(class_index(cat, cats)), pid, num, *map(str, flags)])) + "\n")
    _write_text(info / "stats.csv", "".join(lines))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_text(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8"))
