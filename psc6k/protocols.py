"""Named evaluation protocols (SPEC §8): which pairs are scored and how a keypoint counts.

A PCK number means nothing without its protocol. Two are defined:

``psc6k`` (default, the paper)
    every row of ``test_pairs_ps.csv``, both directions, correct when the distance is
    ``<= alpha * 256``.
``sketchfusion`` (the released code of SketchFusion, CVPR 2025)
    per class, the rows of ``test_pairs_ps.csv`` sorted by ``photo`` (ties keep file order),
    positions 30 to 49 (positions 0-29 are its training data): 20 pairs per class, 2,500 on the
    full benchmark, a photo's 5 sketches together; both directions; correct when the distance is
    ``< alpha * 256`` (strict).

Both average the share of 8 keypoints correct over pair-directions and use the 256 px image side
as the threshold basis. A protocol is a frozen value; :meth:`Protocol.definition` is what its
hash covers, so two results with the same ``protocol_sha256`` were scored by the same rule.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from psc6k.errors import Psc6kError

__all__ = ["Protocol", "PROTOCOLS", "DEFAULT_PROTOCOL", "get_protocol", "select_rows_per_class"]


def select_rows_per_class(photo, cls, start: int, stop: int) -> np.ndarray:
    """Rows whose position among their class's rows, sorted by photo (stable), is in ``[start, stop)``.

    Parameters
    ----------
    photo : sequence of str, length N
        Photo path of each row, in file order.
    cls : sequence of int, length N
        Class of each row.
    start, stop : int
        Positions kept within each class (0-based, ``stop`` excluded).

    Returns
    -------
    ndarray of int64
        Selected row indices into the file, ascending.

    Examples
    --------
    >>> select_rows_per_class(["b", "a", "c", "a"], [1, 1, 1, 2], 1, 3).tolist()
    [0, 2]
    """
    photo = list(photo)
    cls = np.asarray(cls)
    keep = []
    for c in np.unique(cls):
        rows = np.flatnonzero(cls == c).tolist()
        rows.sort(key=lambda i: photo[i])  # list.sort is stable: ties keep file order
        keep.extend(rows[start:stop])
    return np.array(sorted(keep), dtype=np.int64)


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol.

    Attributes
    ----------
    name : str
    summary : str
        One line for ``psc6k protocols``.
    rows_per_class : tuple of (int, int) or None
        ``None``: every annotated pair; ``(start, stop)``: per class, positions ``start..stop-1``
        of the rows sorted by photo (:func:`select_rows_per_class`).
    strict : bool
        ``True``: correct when distance ``< alpha * 256``; ``False``: ``<=``.
    source : str
        Where the definition comes from.
    """

    name: str
    summary: str
    rows_per_class: tuple | None
    strict: bool
    source: str

    @property
    def comparison(self) -> str:
        return "distance < threshold" if self.strict else "distance <= threshold"

    def definition(self) -> dict:
        """Everything that decides a score under this protocol (what :attr:`sha256` covers)."""
        if self.rows_per_class is None:
            pairs = "every row of the annotation file"
        else:
            a, b = self.rows_per_class
            pairs = f"per class, rows {a}-{b - 1} (0-based) of the file sorted by photo, ties in file order"
        return {"name": self.name, "pairs": pairs, "directions": ["sketch_to_photo", "photo_to_sketch"],
                "correct_when": self.comparison, "threshold_basis": "image side, 256 px",
                "pooling": "mean over pair-directions of the share of 8 keypoints correct"}

    @property
    def sha256(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`definition` (hex)."""
        text = json.dumps(self.definition(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def select(self, ann) -> np.ndarray:
        """Annotation rows scored under this protocol, ascending int64 indices.

        Raises
        ------
        Psc6kError
            When the protocol selects no row of ``ann`` (e.g. ``sketchfusion`` on a file with
            fewer than 31 pairs per class).
        """
        if self.rows_per_class is None:
            return np.arange(len(ann), dtype=np.int64)
        rows = select_rows_per_class(ann.photo, ann.cls, *self.rows_per_class)
        if rows.size == 0:
            a, b = self.rows_per_class
            most = int(np.bincount(np.asarray(ann.cls)).max()) if len(ann) else 0
            raise Psc6kError(f"protocol {self.name!r} scores rows {a}-{b - 1} of each class, but "
                             f"{ann.source or 'the annotations'} has at most {most} pairs per class: nothing to score")
        return rows

    def to_dict(self) -> dict:
        return {"name": self.name, "summary": self.summary, "definition": self.definition(),
                "sha256": self.sha256, "source": self.source}


PROTOCOLS: dict[str, Protocol] = {
    "psc6k": Protocol(
        "psc6k", "the paper's protocol: every pair, both directions, distance <= alpha x 256 px",
        None, False, "PSC6K paper (ICML 2023), SPEC §5"),
    "sketchfusion": Protocol(
        "sketchfusion", "SketchFusion's released code: 20 pairs per class (rows 30-49 sorted by photo), "
                        "both directions, distance < alpha x 256 px",
        (30, 50), True, "SketchFusion (CVPR 2025), src/SD_CLIP/utils/utils_dataset.py (get_sketch) and its PCK code"),
}
DEFAULT_PROTOCOL = "psc6k"


def get_protocol(protocol) -> Protocol:
    """A :class:`Protocol` from its name (or the protocol itself); unknown names are one error line."""
    if isinstance(protocol, Protocol):
        return protocol
    try:
        return PROTOCOLS[str(protocol)]
    except KeyError:
        raise Psc6kError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}") from None
