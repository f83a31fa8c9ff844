"""``psc6k doctor``: is a low score the method, or a convention mistake (SPEC §9)?

The submission is re-scored under every combination of candidate *fixes* — the inverse of each
convention mistake of SPEC §9 — and the fixes that raise PCK are reported, best first.

===================== ======================================== ==========================================
mistake (SPEC §9)     what the submitter did                   the fix, as NumPy on ``flow [N, H, W, 2]``
===================== ======================================== ==========================================
align_corners_false   x = ((u + 1) * 256 - 1) / 2              ``flow = ((flow + 1) * 256 - 1) / 255 - 1``
pixel_units           values are pixels 0...255                ``flow = flow * (2 / 255) - 1``
swap_directions       the two directions exchanged             ``s2p, p2s = p2s, s2p``
swap_xy               last axis holds (v, u)                   ``flow = flow[..., ::-1]``
transposed_grid       ``flow[i, j]`` holds pixel (x=i, y=j)    ``flow = flow.transpose(0, 2, 1, 3)``
===================== ======================================== ==========================================

The fixes commute (``swap_xy`` permutes the two components, ``pixel_units`` and
``align_corners_false`` apply the same affine map to both, ``transposed_grid`` permutes grid
positions, ``swap_directions`` exchanges arrays), so a combination is a set; its name joins the
mistakes in alphabetical order with ``+``. ``pixel_units`` and ``align_corners_false`` exclude each
other (a flow in pixels has no ``align_corners``): 23 combinations for flows, 3 for keypoints
(``swap_xy``, ``swap_directions``).

**Speed.** No fixed flow field is ever built: PCK reads the flows at 8 points per pair
(:func:`psc6k.pck.sample_flow`), and each fix only changes which array is read
(``swap_directions``), where (``transposed_grid`` reads at (y, x): bilinear upsampling commutes
with transposition) and how the read value becomes pixels (the other three). So the flows are
read 8 times (2 arrays x 2 directions x plain / transposed), and every combination is scored by
:func:`psc6k.pck.evaluate` (the one scorer) as a keypoint submission.

**What PCK cannot see.** ``align_corners_false`` moves a point by ``u / 2`` px, at most half a
pixel: it changes PCK only for keypoints within half a pixel of the threshold, so the doctor
almost never names it (and a correct score stays correct). Likewise ``swap_xy`` together with
``transposed_grid`` maps an identity-like flow onto itself. A mistake is added to a fix only when
it raises PCK by more than :data:`MIN_EXTRA_GAIN` points over the fix without it, so the top
suspect is the smallest fix that explains the score.

**Verdict.** ``gain`` = mean over the alphas of (fixed PCK - submitted PCK), in points. The
diagnosis is ``ok`` unless the top suspect gains more than :data:`GAIN_THRESHOLD` = 5 points: a
correct submission loses tens of points under any fix, so 5 points is far above what a fix can
win by chance on the full benchmark and still small next to the 30-80 points a real mistake
costs. Degenerate flows (constant, identity) and values far outside the image are reported as
warnings; they do not change ``ok``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from psc6k import IMAGE_SIZE
from psc6k.pck import DEFAULT_ALPHAS, alpha_key, evaluate, flow_to_pixels, sample_flow
from psc6k.protocols import DEFAULT_PROTOCOL
from psc6k.submission import DIRECTIONS, Submission

#: SPEC §9 names, in the canonical (alphabetical) order of a combination's name.
MISTAKES = ("align_corners_false", "pixel_units", "swap_directions", "swap_xy", "transposed_grid")
#: Mistakes that can hold for keypoint submissions (pixels already; no grid).
KEYPOINT_MISTAKES = ("swap_directions", "swap_xy")
#: A fix gaining more than this many PCK points (mean over the alphas) makes the diagnosis not ok.
GAIN_THRESHOLD = 5.0
#: A mistake joins a fix only when it adds more than this many points to the fix without it.
MIN_EXTRA_GAIN = 0.5
#: Flow values beyond this magnitude point more than half an image beyond the border.
FAR_OUTSIDE = 2.0

#: Each mistake: (what the submitter did, the fix in words, the fix as NumPy) for flows.
EXPLAIN = {
    "align_corners_false": ("normalised with align_corners=False",
                            "renormalise with align_corners=True",
                            "flow = ((flow + 1) * 256 - 1) / 255 - 1"),
    "pixel_units": ("values in pixels 0...255 instead of -1...1",
                    "convert pixels to normalised coordinates",
                    "flow = flow * (2 / 255) - 1"),
    "swap_directions": ("sketch_to_photo and photo_to_sketch exchanged",
                        "exchange the two directions",
                        "sketch_to_photo, photo_to_sketch = photo_to_sketch, sketch_to_photo"),
    "swap_xy": ("last axis holds (y, x) instead of (x, y)",
                "swap the last axis back to (x, y)",
                "flow = flow[..., ::-1]"),
    "transposed_grid": ("grid indexed [x, y] instead of [row, col]",
                        "transpose the grid",
                        "flow = flow.transpose(0, 2, 1, 3)"),
}
#: The NumPy line for keypoint submissions ``pred [N, 8, 2]``.
KEYPOINT_NUMPY = {"swap_xy": "pred = pred[..., ::-1]", "swap_directions": EXPLAIN["swap_directions"][2]}


def fix_name(mistakes) -> str:
    """Canonical name of a combination: SPEC §9 names, alphabetical, joined by ``+``.

    >>> fix_name(["swap_xy", "swap_directions"])
    'swap_directions+swap_xy'
    """
    unknown = set(mistakes) - set(MISTAKES)
    if unknown:
        raise ValueError(f"unknown mistakes {sorted(unknown)}")
    return "+".join(m for m in MISTAKES if m in set(mistakes))


def candidate_fixes(kind: str = "flow") -> list[frozenset]:
    """Every combination the doctor tries (the empty fix excluded).

    >>> len(candidate_fixes("flow")), len(candidate_fixes("keypoints"))
    (23, 3)
    """
    names = MISTAKES if kind == "flow" else KEYPOINT_MISTAKES
    out = []
    for r in range(1, len(names) + 1):
        for combo in combinations(names, r):
            if {"pixel_units", "align_corners_false"} <= set(combo):
                continue
            out.append(frozenset(combo))
    return out


def fix_numpy(mistakes, kind: str = "flow") -> list[str]:
    """The NumPy lines that apply a fix, in canonical order (each applied to both directions)."""
    ordered = [m for m in MISTAKES if m in set(mistakes)]
    if kind == "flow":
        return [EXPLAIN[m][2] for m in ordered]
    return [KEYPOINT_NUMPY[m] for m in ordered]


def fix_words(mistakes) -> str:
    """The fix in words: ``"exchange the two directions, then swap the last axis back to (x, y)"``."""
    return ", then ".join(EXPLAIN[m][1] for m in MISTAKES if m in set(mistakes))


@dataclass
class Diagnosis:
    """What the doctor found.

    Attributes
    ----------
    ok : bool
        No fix gains more than ``threshold`` points.
    pck : dict
        ``alpha_key -> PCK`` of the submission as submitted.
    suspects : list of dict
        Fixes that raise PCK, best first: ``fix``, one key per alpha, ``gain`` (points, mean over
        alphas), ``mistakes`` (list), ``words``, ``numpy`` (list of lines).
    warnings : list of str
        Degenerate flows, values far outside the image.
    """

    ok: bool
    pck: dict
    suspects: list
    warnings: list
    kind: str
    n_pairs: int
    protocol: str
    threshold: float = GAIN_THRESHOLD
    provenance: dict = field(default_factory=dict)

    @property
    def top(self) -> dict | None:
        return self.suspects[0] if self.suspects else None

    def to_dict(self) -> dict:
        return {"ok": self.ok, "pck": self.pck, "suspects": self.suspects, "warnings": self.warnings,
                "kind": self.kind, "n_pairs": self.n_pairs, "protocol": self.protocol,
                "threshold_points": self.threshold, "provenance": self.provenance}


def _fixed_predictions(samples: dict, mistakes: frozenset) -> dict:
    """Predicted target pixels ``[n, 8, 2]`` per direction after applying ``mistakes``' fixes.

    ``samples[(array, direction, transposed)]``: values of the submitted ``array`` read at the
    source keypoints of ``direction`` (at (y, x) when ``transposed``).
    """
    out = {}
    for d in DIRECTIONS:
        array = (DIRECTIONS[1] if d == DIRECTIONS[0] else DIRECTIONS[0]) if "swap_directions" in mistakes else d
        v = samples[(array, d, "transposed_grid" in mistakes)]
        if "swap_xy" in mistakes:
            v = v[..., ::-1]
        if "pixel_units" in mistakes:
            out[d] = v
        elif "align_corners_false" in mistakes:
            out[d] = ((v + 1.0) * IMAGE_SIZE - 1.0) / 2.0
        else:
            out[d] = flow_to_pixels(v) if samples["kind"] == "flow" else v
    return out


def _read_samples(ann, sub: Submission, rows: np.ndarray) -> dict:
    """Flows (or keypoints) of ``sub`` read at the source keypoints of annotation ``rows``."""
    position = {pair: i for i, pair in enumerate(zip(sub.photo, sub.sketch))}
    sub_idx = np.array([position[(ann.photo[r], ann.sketch[r])] for r in rows], dtype=np.int64)
    sources = {"sketch_to_photo": ann.sketch_kps[rows], "photo_to_sketch": ann.photo_kps[rows]}
    samples = {"kind": sub.kind}
    for array in DIRECTIONS:
        values = np.asarray(getattr(sub, array))
        for d in DIRECTIONS:
            for transposed in (False, True):
                if sub.kind == "flow":
                    points = sources[d][..., ::-1] if transposed else sources[d]
                    samples[(array, d, transposed)] = sample_flow(values, points, index=sub_idx)
                elif not transposed:
                    samples[(array, d, False)] = values[sub_idx].astype(np.float64)
    return samples


def flow_warnings(sub: Submission, chunk_values: int = 1 << 22) -> list[str]:
    """Degenerate flows (constant, identity) and values far outside the image, one line each.

    Reads the arrays in blocks of about ``chunk_values`` numbers, in their own dtype (never a
    full-size temporary).
    """
    lines = []
    n = len(sub)
    for d in DIRECTIONS:
        values = np.asarray(getattr(sub, d))
        per_pair = int(np.prod(values.shape[1:])) or 1
        chunk = max(1, chunk_values // per_pair)
        constant = identity = far = 0
        if sub.kind == "flow":
            h, w = values.shape[1:3]
            grid = np.stack(np.meshgrid(np.linspace(-1, 1, w), np.linspace(-1, 1, h), indexing="xy"),
                            axis=-1).astype(values.dtype)
        for start in range(0, n, chunk):
            block = values[start:start + chunk]
            first = block.reshape(block.shape[0], -1, 2)[:, :1]  # each pair's first (u, v)
            spread = np.abs(block.reshape(block.shape[0], -1, 2) - first).reshape(block.shape[0], -1).max(axis=1)
            constant += int((spread < 1e-6).sum())
            if sub.kind == "flow":
                identity += int((np.abs(block - grid).reshape(block.shape[0], -1).max(axis=1) < 1e-3).sum())
                far += int(np.count_nonzero(np.abs(block) > FAR_OUTSIDE))
            else:
                far += int(np.count_nonzero((block < -IMAGE_SIZE / 2) | (block > IMAGE_SIZE * 1.5 - 1)))
        total = values.size
        if constant:
            what = "flows" if sub.kind == "flow" else "keypoint sets"
            lines.append(f"{d}: {constant} of {n} {what} are constant (every point mapped to one place)")
        if identity:
            lines.append(f"{d}: {identity} of {n} flows are the identity (each pixel mapped to itself)")
        if far:
            limit = (f"|value| > {FAR_OUTSIDE:g}, more than half an image beyond the border" if sub.kind == "flow"
                     else "more than half an image beyond the border")
            lines.append(f"{d}: {far} of {total} values ({100 * far / total:.1f}%) lie far outside the image ({limit})")
    return lines


def useful_fixes(gains: dict, min_extra: float = MIN_EXTRA_GAIN) -> list[frozenset]:
    """The fixes worth reporting: those that raise PCK (gain > 0) and in which every mistake adds
    more than ``min_extra`` points over the same fix without it (the smallest explanation).

    Parameters
    ----------
    gains : dict of frozenset to float
        Gain of every candidate fix (a fix without one of its mistakes counts as gain 0 when
        absent, i.e. the empty fix).

    Examples
    --------
    >>> g = {frozenset({"swap_xy"}): 80.0, frozenset({"align_corners_false"}): 0.1,
    ...      frozenset({"swap_xy", "align_corners_false"}): 80.3}
    >>> [sorted(f) for f in useful_fixes(g)]
    [['swap_xy'], ['align_corners_false']]
    """
    out = []
    for mistakes, gain in gains.items():
        if gain <= 0:
            continue
        if len(mistakes) > 1 and any(gain - gains.get(mistakes - {m}, 0.0) <= min_extra for m in mistakes):
            continue
        out.append(mistakes)
    return out


def diagnose(ann, sub: Submission, alphas=DEFAULT_ALPHAS, *, allow_partial: bool = False,
             protocol=DEFAULT_PROTOCOL, threshold: float = GAIN_THRESHOLD) -> Diagnosis:
    """Re-score ``sub`` under every candidate fix; the fixes that raise PCK, best first.

    Parameters
    ----------
    ann : psc6k.formats.Annotations
    sub : psc6k.submission.Submission
    alphas : sequence of float
    allow_partial : bool
        Diagnose the covered pairs only.
    protocol : str
        Protocol the scores follow (:mod:`psc6k.protocols`).
    threshold : float
        Gain in points (mean over alphas) above which the diagnosis is not ok.

    Returns
    -------
    Diagnosis
    """
    base = evaluate(ann, sub, alphas, allow_partial=allow_partial, n_bootstrap=0, protocol=protocol)
    keys = [alpha_key(a) for a in base.alphas]
    rows = base.ann_index
    samples = _read_samples(ann, sub, rows)
    photos, sketches = [ann.photo[r] for r in rows], [ann.sketch[r] for r in rows]
    scored = {}
    for mistakes in candidate_fixes(sub.kind):
        pred = _fixed_predictions(samples, mistakes)
        fixed = Submission(sub.method, "keypoints", photos, sketches, pred["sketch_to_photo"], pred["photo_to_sketch"])
        res = evaluate(ann, fixed, base.alphas, allow_partial=True, n_bootstrap=0, protocol=protocol)
        gain = float(np.mean([res.overall[k] - base.overall[k] for k in keys]))
        scored[mistakes] = (gain, res.overall)
    suspects = []
    for mistakes in useful_fixes({m: g for m, (g, _) in scored.items()}):
        gain, overall = scored[mistakes]
        suspects.append({"fix": fix_name(mistakes), **{k: overall[k] for k in keys}, "gain": gain,
                         "mistakes": [m for m in MISTAKES if m in mistakes], "words": fix_words(mistakes),
                         "numpy": fix_numpy(mistakes, sub.kind)})
    suspects.sort(key=lambda s: (-s["gain"], len(s["mistakes"]), s["fix"]))
    ok = not suspects or suspects[0]["gain"] <= threshold
    return Diagnosis(ok, dict(base.overall), suspects, flow_warnings(sub), sub.kind, base.n_pairs,
                     base.provenance.get("protocol", str(protocol)), threshold, dict(base.provenance))


def format_diagnosis(diag: Diagnosis, limit: int = 5) -> str:
    """The text ``psc6k doctor`` prints: the verdict, the top fixes in words and NumPy, warnings."""
    keys = [k for k in diag.pck]
    scores = "   ".join(f"{k.upper()} {diag.pck[k]:.2f}" for k in keys)
    lines = [f"as submitted ({diag.kind}, {diag.n_pairs} pairs, protocol {diag.protocol}): {scores}"]
    if diag.ok:
        lines.append(f"ok: no convention fix (SPEC §9) raises PCK by more than {diag.threshold:g} points")
    else:
        top = diag.top
        lines.append(f"SUSPECT: {top['fix']} — {'; '.join(EXPLAIN[m][0] for m in top['mistakes'])}")
        lines.append(f"  fix: {top['words']}; PCK gains {top['gain']:.1f} points. In NumPy, for both directions:")
        lines += [f"    {line}" for line in top["numpy"]]
    if diag.suspects:
        lines += ["", f"{'fix':<48}" + "".join(f"{k.upper():>11}" for k in keys) + f"{'gain':>9}"]
        for s in diag.suspects[:limit]:
            lines.append(f"{s['fix']:<48}" + "".join(f"{s[k]:11.2f}" for k in keys) + f"{s['gain']:+9.2f}")
        if len(diag.suspects) > limit:
            lines.append(f"... and {len(diag.suspects) - limit} more (--json lists all)")
    for w in diag.warnings:
        lines.append(f"warning: {w}")
    return "\n".join(lines)
