"""``psc6k annotate init``: register a study (pairs, keypoints, images) in the database.

One task per (pair, keypoint), each with ``annotators_per_keypoint`` slots; catch trials are
extra tasks with a known answer and no slots.
"""

from __future__ import annotations

import json
import random
import secrets
from pathlib import Path

import numpy as np
from sqlalchemy import func, insert, select

from psc6k import IMAGE_SIZE, NUM_KEYPOINTS
from psc6k.errors import FormatError, Psc6kError
from psc6k.formats import COORD_MAX, COORD_MIN, read_annotations, read_keypoints_csv, read_pair_list
from psc6k.sketchy import category_of

from . import db
from .config import ItemSpec, StudyConfig


def safe_relpath(rel: str, *, what: str) -> str:
    """A registered image path: relative, ``/``-separated, no ``..``; else Psc6kError."""
    norm = rel.replace("\\", "/")
    parts = norm.split("/")
    if not norm or norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or ".." in parts \
            or any(p in ("", ".") for p in parts) or "\x00" in norm:
        raise Psc6kError(f"{what} path {rel!r} must be relative to the images root, without '..'")
    return norm


def resolve_image(root, rel: str) -> Path:
    """Absolute path of a registered image, refusing anything that resolves outside ``root``."""
    root = Path(root).resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise Psc6kError(f"image path {rel!r} leaves the images root")
    return path


def _xy_ok(xy) -> bool:
    return all(np.isfinite(v) and COORD_MIN <= v <= COORD_MAX for v in xy)


def init_study(db_url: str, pairs_csv, images_root, config: StudyConfig, keypoints_csv=None,
               *, force: bool = False) -> dict:
    """Create the study in the database at ``db_url``.

    Parameters
    ----------
    db_url : str
        SQLAlchemy URL (``sqlite:///study.db`` or ``postgresql+psycopg://...``) or a file path.
    pairs_csv : path
        Any CSV with ``photo,sketch[,class]`` columns. When it is a ``test_pairs_ps.csv`` /
        ``test_pairs_st.csv`` its XA/YA are kept as known answers (practice trials) and its
        XB/YB are the sketch keypoints unless ``keypoints_csv`` is given.
    images_root : path
        The Sketchy root the CSV paths are relative to; every image must exist.
    config : StudyConfig
    keypoints_csv : path, optional
        ``sketch,X,Y`` (``psc6k build-keypoints``); needed unless the pairs CSV has XB/YB.
    force : bool
        Replace a study already in the database (drops all its data).

    Returns
    -------
    dict
        Counts (pairs, tasks, slots, categories, minimum complete sessions), the completion
        code and redirect URL, and the study link's key.
    """
    config.finalise()
    root = Path(images_root)
    if not root.is_dir():
        raise Psc6kError(f"`images_root` {root}: not a directory", param="images_root")
    root = root.resolve()
    pair_list, known, sketch_kps = _read_inputs(pairs_csv, keypoints_csv)
    config.categories = list(pair_list.categories)
    rows = _pair_rows(pair_list, known, sketch_kps, pairs_csv, keypoints_csv)
    rows = _fix_practice(config, rows)
    missing = [p for r in rows for p in (r["photo"], r["sketch"]) if not (root / p).is_file()]
    if missing:
        raise Psc6kError(f"{len(missing)} image(s) of {pairs_csv} are missing under `images_root` {root}, "
                         f"e.g. {missing[:3]}", param="images_root")
    extra_rows = _item_rows(config, rows, sketch_kps, root)
    _write_study(db_url, config, root, rows, extra_rows, force=force)
    return _summary(config, rows)


def _read_inputs(pairs_csv, keypoints_csv):
    """The pair list, its known answers (or None) and the sketch keypoints ``{sketch: [8, 2]}``."""
    pair_list = read_pair_list(pairs_csv)
    try:
        known = read_annotations(pairs_csv, categories=pair_list.categories)
    except FormatError:
        known = None  # a plain photo,sketch,class list: no known answers
    if keypoints_csv is not None:
        sketch_kps = read_keypoints_csv(keypoints_csv)
    elif known is not None:
        sketch_kps = {s: known.sketch_kps[i] for (p, s), i in known.index().items()}
    else:
        raise Psc6kError(f"{pairs_csv} has no XB/YB columns: give `keypoints_csv` keypoints.csv "
                         f"(the output of psc6k build-keypoints)", param="keypoints_csv")
    return pair_list, known, sketch_kps


def _pair_rows(pair_list, known, sketch_kps, pairs_csv, keypoints_csv) -> list[dict]:
    """One ``pairs`` row per study pair, paths and keypoints checked."""
    known_index = known.index() if known is not None else {}
    rows = []
    for i, (photo, sketch, cls) in enumerate(zip(pair_list.photo, pair_list.sketch, pair_list.cls)):
        safe_relpath(photo, what=f"{pairs_csv}: pair {i + 1} photo")
        safe_relpath(sketch, what=f"{pairs_csv}: pair {i + 1} sketch")
        kps = sketch_kps.get(sketch)
        if kps is None:
            raise Psc6kError(f"{keypoints_csv or pairs_csv}: no keypoints for sketch {sketch!r} "
                             f"(pair {i + 1} of {pairs_csv})")
        kps = np.asarray(kps, dtype=np.float64)
        if not _xy_ok(kps.ravel()):
            raise Psc6kError(f"keypoints of sketch {sketch!r} lie outside the {IMAGE_SIZE}x{IMAGE_SIZE} image")
        j = known_index.get((photo, sketch))
        photo_kps = known.photo_kps[j].tolist() if j is not None else None
        rows.append({"photo": photo, "sketch": sketch, "category": category_of(photo), "cls": int(cls),
                     "sketch_kps_json": json.dumps(kps.tolist()),
                     "photo_kps_json": json.dumps(photo_kps) if photo_kps is not None else None})
    return rows


def draw_practice(rows, count: int, seed: int, *, with_answers: bool = True, avoid=frozenset()) -> list[dict]:
    """``count`` practice trials from ``rows`` (``pairs`` rows as dicts), one per category,
    preferring pairs with known answers, in an order fixed by ``seed``; keypoints 0, 1, 2, ...
    Each: ``photo, sketch, keypoint, sketch_keypoint, answer`` (None without a known answer or
    without ``with_answers``). Pairs ``(photo, sketch)`` in ``avoid`` are not drawn, nor the
    only pair of a category (drawn pairs leave the study; a category must not)."""
    if count <= 0:
        return []
    per_category: dict[str, int] = {}
    for r in rows:
        per_category[r["category"]] = per_category.get(r["category"], 0) + 1
    rows = [r for r in rows if (r["photo"], r["sketch"]) not in avoid and per_category[r["category"]] > 1]
    pool = [r for r in rows if r["photo_kps_json"]] or list(rows)
    pool = sorted(pool, key=lambda r: (r["photo"], r["sketch"]))
    random.Random(seed).shuffle(pool)
    items, seen = [], set()
    for r in pool:
        if r["category"] in seen:
            continue
        seen.add(r["category"])
        k = len(items) % NUM_KEYPOINTS
        answer = json.loads(r["photo_kps_json"])[k] if (r["photo_kps_json"] and with_answers) else None
        items.append({"photo": r["photo"], "sketch": r["sketch"], "keypoint": k,
                      "sketch_keypoint": json.loads(r["sketch_kps_json"])[k], "answer": answer})
        if len(items) == count:
            break
    return items


def _fix_practice(config: StudyConfig, rows: list[dict]) -> list[dict]:
    """Fix the practice trials at init. Without ``[[practice.items]]``, ``practice.count`` study
    pairs are drawn and **taken out of the study** (a practice trial shows its answer to anyone
    who opens the page, and trains the participant on it: it must never be a (pair, keypoint)
    whose clicks count); returns the study's remaining pairs."""
    config.practice_fixed = True
    if config.practice_items:
        return rows
    drawn = draw_practice(rows, config.practice_count, config.seed,
                          avoid={(c.photo, c.sketch) for c in config.catch_items})
    config.practice_items = [ItemSpec(**d) for d in drawn]
    taken = {(d["photo"], d["sketch"]) for d in drawn}
    config.practice_pairs_excluded = sorted([p, s] for p, s in taken)
    return [r for r in rows if (r["photo"], r["sketch"]) not in taken]


def _item_rows(config: StudyConfig, rows: list[dict], sketch_kps: dict, root: Path) -> list[dict]:
    """Check the practice and catch items (filling their sketch keypoints) and return ``pairs``
    rows for catch pairs that are not study pairs. A practice item may be neither a study pair
    (each of its keypoints is a task whose clicks count) nor a catch item (practice shows its
    answer)."""
    pair_key = {(r["photo"], r["sketch"]) for r in rows}
    catch_key = {(c.photo, c.sketch, c.keypoint) for c in config.catch_items}
    extra_rows = []
    for kind, items in (("practice", config.practice_items), ("catch", config.catch_items)):
        for n, item in enumerate(items):
            where = f"study config [[{kind}.items]] #{n + 1}"
            if kind == "practice" and (item.photo, item.sketch) in pair_key:
                raise Psc6kError(f"{where}: ({item.photo}, {item.sketch}) is a pair of the study, so its keypoint "
                                 f"{item.keypoint} is a task whose clicks count; practice shows its answer to "
                                 f"everyone: take a pair from outside the study (e.g. a training pair), or leave "
                                 f"[[practice.items]] out to have practice pairs drawn and taken out of the study")
            if kind == "practice" and (item.photo, item.sketch, item.keypoint) in catch_key:
                raise Psc6kError(f"{where}: the same trial is a [[catch.items]]; practice would show its answer")
            _check_item(item, where, sketch_kps, root)
            if kind == "catch" and (item.photo, item.sketch) not in pair_key:
                pair_key.add((item.photo, item.sketch))
                extra_rows.append(_catch_pair_row(item, where, config.categories))
    return extra_rows


def _check_item(item, where: str, sketch_kps: dict, root: Path) -> None:
    safe_relpath(item.photo, what=f"{where}: photo")
    safe_relpath(item.sketch, what=f"{where}: sketch")
    for p in (item.photo, item.sketch):
        if not (root / p).is_file():
            raise Psc6kError(f"{where}: image {p!r} not found under `images_root` {root}", param="images_root")
    if item.sketch_keypoint is None:
        kps = sketch_kps.get(item.sketch)
        if kps is None:
            raise Psc6kError(f"{where}: no sketch_keypoint given and sketch {item.sketch!r} is not in the keypoints")
        item.sketch_keypoint = [float(v) for v in np.asarray(kps)[item.keypoint]]
    for key in ("sketch_keypoint", "answer"):
        v = getattr(item, key)
        if v is not None and not _xy_ok(v):
            raise Psc6kError(f"{where}: {key} {v} lies outside the image")


def _catch_pair_row(item, where: str, categories: list) -> dict:
    try:
        cat = category_of(item.photo)
    except ValueError:
        raise Psc6kError(f"{where}: photo path {item.photo!r} has no category folder") from None
    kps = np.full((NUM_KEYPOINTS, 2), np.nan)
    kps[item.keypoint] = item.sketch_keypoint
    return {"photo": item.photo, "sketch": item.sketch, "category": cat,
            "cls": categories.index(cat) + 1 if cat in categories else 0,
            "sketch_kps_json": json.dumps([[None if np.isnan(v) else v for v in p] for p in kps.tolist()]),
            "photo_kps_json": None}


def _write_study(db_url: str, config: StudyConfig, root: Path, rows: list[dict], extra_rows: list[dict],
                 *, force: bool) -> None:
    """The study row, pairs, one task per (pair, keypoint) with its slots, and the catch tasks."""
    write, _ = db.make_engines(db_url)
    try:
        with write.begin() as conn:
            if force:
                db.metadata.drop_all(conn)
            db.metadata.create_all(conn)
            if conn.execute(select(func.count()).select_from(db.study)).scalar_one():
                shown = write.url.render_as_string(hide_password=True)
                raise Psc6kError(f"{shown} already holds a study; use `force` to replace it "
                                 f"(this deletes its sessions and clicks)", param="force")
            conn.execute(insert(db.study), [{"id": 1, "config_json": json.dumps(config.to_dict()),
                                              "salt": secrets.token_hex(16), "image_root": str(root),
                                              "created_at": db.now()}])
            conn.execute(insert(db.pairs), rows + extra_rows)
            pair_ids = {(r.photo, r.sketch): r.id for r in conn.execute(select(db.pairs.c.id, db.pairs.c.photo, db.pairs.c.sketch))}
            n = config.annotators_per_keypoint
            ranks = np.random.default_rng(config.seed).permutation(len(rows) * NUM_KEYPOINTS)
            task_rows = []
            for i, r in enumerate(rows):
                pid = pair_ids[(r["photo"], r["sketch"])]
                for k in range(NUM_KEYPOINTS):
                    task_rows.append({"pair_id": pid, "keypoint": k, "is_catch": False, "category": r["category"],
                                      "n_free": n, "rank": int(ranks[i * NUM_KEYPOINTS + k]),
                                      "answer_x": None, "answer_y": None, "tolerance_px": None})
            for item in config.catch_items:
                task_rows.append({"pair_id": pair_ids[(item.photo, item.sketch)], "keypoint": item.keypoint,
                                  "is_catch": True, "category": category_of(item.photo), "n_free": 0, "rank": 0,
                                  "answer_x": float(item.answer[0]), "answer_y": float(item.answer[1]),
                                  "tolerance_px": float(item.tolerance_px or config.catch_tolerance_px)})
            conn.execute(insert(db.tasks), task_rows)
            conn.execute(insert(db.categories).from_select(["category", "n_free", "n_open"], db.category_counts_query()))
            task_ids = conn.execute(select(db.tasks.c.id).where(db.tasks.c.is_catch == False)  # noqa: E712
                                    .order_by(db.tasks.c.id)).scalars().all()
            slot_rows = [{"task_id": t, "slot_index": s, "holder_session_id": None, "filled": False}
                         for t in task_ids for s in range(n)]
            for start in range(0, len(slot_rows), 20000):
                conn.execute(insert(db.slots), slot_rows[start:start + 20000])
    finally:
        write.dispose()


def _summary(config: StudyConfig, rows: list[dict]) -> dict:
    n = config.annotators_per_keypoint
    per_category: dict[str, int] = {}
    for r in rows:
        per_category[r["category"]] = per_category.get(r["category"], 0) + NUM_KEYPOINTS * n
    n_slots = len(rows) * NUM_KEYPOINTS * n
    # Each session takes at most one slot per category per round: the busiest category bounds it.
    per_session = config.trials_per_participant
    n_cat = len(per_category)
    rounds = -(-per_session // n_cat) if n_cat else 0
    min_sessions = max(-(-n_slots // per_session), -(-max(per_category.values(), default=0) // max(rounds, 1)))
    return {"pairs": len(rows), "tasks": len(rows) * NUM_KEYPOINTS, "slots": n_slots,
            "categories": n_cat, "catch_tasks": len(config.catch_items),
            "trials_per_participant": per_session, "minimum_complete_sessions": min_sessions,
            "completion_code": config.completion_code, "redirect_url": config.redirect_url,
            "link_key": config.link_key, "first_click_minutes": config.first_click_minutes,
            "practice_pairs_excluded": len(config.practice_pairs_excluded)}
