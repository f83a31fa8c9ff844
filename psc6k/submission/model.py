"""What a submission is: :class:`Submission`, the format's constants, and :class:`ReadLimits`,
what reading one may cost (see ``docs/submission.md``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from psc6k.errors import SubmissionError, TooLargeError

SUBMISSION_VERSION = 1
KINDS = ("flow", "keypoints")
DIRECTIONS = ("sketch_to_photo", "photo_to_sketch")
#: Optional per-pixel confidence of each direction's flow (issue #15), ``[N, H, W]``.
CONFIDENCE_FIELDS = {d: f"{d}_confidence" for d in DIRECTIONS}
#: Largest magnitude accepted for any value. Flows outside [-1, 1] are legal (they miss), but
#: values this large are a bug in the submitter's code, and would overflow in float32 maths.
MAX_ABS_VALUE = 1e6
#: Default cap on what a submission may make us hold: decompressed JSON text, declared NPZ arrays.
DEFAULT_MAX_DECOMPRESSED = 8 * 1024**3
#: Default largest flow side (H and W); PSCNet gives 16, the images are 256.
MAX_FLOW_SIDE = 256
#: Default largest number of pairs (PSC6K has 6,250 test pairs).
MAX_PAIRS = 100_000
#: Longest string (photo / sketch path, method name) in characters.
MAX_STRING_CHARS = 1024
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


class SubmissionTooLarge(SubmissionError, TooLargeError):
    """A submission declares (or decompresses to) more than the limits allow (HTTP 413)."""


@dataclass(frozen=True)
class ReadLimits:
    """What one submission may cost to read.

    Parameters
    ----------
    max_bytes : int
        Largest decompressed JSON text, and largest total of the arrays an NPZ declares, in bytes.
    max_side : int
        Largest flow height and width.
    max_pairs : int
        Largest number of pairs.
    """

    max_bytes: int = DEFAULT_MAX_DECOMPRESSED
    max_side: int = MAX_FLOW_SIDE
    max_pairs: int = MAX_PAIRS


@dataclass
class Submission:
    """Predictions of one method for a set of pairs.

    Attributes
    ----------
    method : str
    kind : {"flow", "keypoints"}
    photo, sketch : list of str, length N
        Pair paths, exactly as in the annotation CSV.
    sketch_to_photo, photo_to_sketch : ndarray
        ``kind == "flow"``: float ``[N, H, W, 2]`` normalised flows (SPEC §5).
        ``kind == "keypoints"``: float ``[N, 8, 2]`` predicted pixels (x, y) in the target image.
    confidence : dict of str to ndarray, or None
        Flows only, optional: ``{"sketch_to_photo": [N, H, W], "photo_to_sketch": [N, H, W]}``,
        the method's confidence in each flow vector (higher = more confident; any finite float).
        Both directions or neither.
    """

    method: str
    kind: str
    photo: list
    sketch: list
    sketch_to_photo: np.ndarray
    photo_to_sketch: np.ndarray
    confidence: dict | None = None

    def __len__(self) -> int:
        return len(self.photo)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.photo, self.sketch))

    def to_json_dict(self) -> dict:
        pairs = []
        for i, (p, s) in enumerate(zip(self.photo, self.sketch)):
            entry = {"photo": p, "sketch": s, "sketch_to_photo": self.sketch_to_photo[i].tolist(),
                     "photo_to_sketch": self.photo_to_sketch[i].tolist()}
            if self.confidence is not None:
                for d in DIRECTIONS:
                    entry[CONFIDENCE_FIELDS[d]] = self.confidence[d][i].tolist()
            pairs.append(entry)
        return {"psc6k_submission": SUBMISSION_VERSION, "method": self.method, "kind": self.kind, "pairs": pairs}


def identity_flow(n: int, size: int = 16) -> np.ndarray:
    """``[n, size, size, 2]`` identity flow in the SPEC §5 convention (every pixel maps to itself)."""
    lin = np.linspace(-1.0, 1.0, size)
    grid = np.stack(np.meshgrid(lin, lin, indexing="xy"), axis=-1)
    return np.broadcast_to(grid, (n, size, size, 2)).copy()


def mb(n: int) -> str:
    """Bytes as a short ``"12.3 MB"`` for messages."""
    return f"{n / 1e6:.1f} MB" if n < 10e6 else f"{n / 1e6:.0f} MB"


def short(text, limit: int = 60) -> str:
    """``repr(text)`` cut to ``limit`` characters, for messages that quote user input."""
    text = repr(text)
    return text if len(text) <= limit else text[:limit] + "...'"


def one_line(exc) -> str:
    """A short, stable description of a read error (the same whatever the stream: file, bytes, spool)."""
    if isinstance(exc, (OSError, EOFError)) or "seek" in str(exc):
        return "truncated or corrupt data"
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
