"""Study configuration: ``study.toml`` (read with tomllib) plus command-line overrides.

See docs/annotation.md for every key. Unknown keys are an error (a typo must not silently fall
back to a default that changes the study).
"""

from __future__ import annotations

import dataclasses
import math
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from psc6k.errors import Psc6kError
from psc6k.inputs import read_text

DEFAULT_TITLE = "Find the matching point: sketch to photo"
DEFAULT_CONSENT = (
    "This study is part of research on how people match hand-drawn sketches to photos. "
    "You will see a sketch with one marked point and a photo of a similar object, and click "
    "the point in the photo that corresponds to the marked point. It takes about 15 minutes. "
    "We record your clicks, response times and the size of your screen, together with a "
    "pseudonym derived from your Prolific ID; no other personal data is collected. "
    "Participation is voluntary and you may stop at any time by closing the page. "
    "By continuing you agree to take part."
)
DEFAULT_INSTRUCTIONS = (
    "On the left is a sketch with one point marked by a black-and-white ring. On the right is a photo of an "
    "object of the same kind. Click the point on the photo that corresponds to the marked "
    "point on the sketch: the same part of the object (for example the tip of the left wing, "
    "or the front wheel). If the part is hidden, click where it would be. Each click is saved "
    "immediately; if you reload the page you continue where you stopped."
)
PROLIFIC_COMPLETE_URL = "https://app.prolific.com/submissions/complete?cc={code}"
#: The study URL to paste into Prolific (``{base}``: where the server is reachable).
PROLIFIC_STUDY_URL = ("{base}/?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}&STUDY_ID={{{{%STUDY_ID%}}}}"
                      "&SESSION_ID={{{{%SESSION_ID%}}}}&key={key}")
LINK_KEY_RE = r"^[A-Za-z0-9_\-]{8,64}$"


@dataclass
class ItemSpec:
    """A practice or catch trial: a pair, a keypoint index and (optionally) the known answer."""

    photo: str
    sketch: str
    keypoint: int
    answer: list | None = None            # [x, y] photo pixels
    tolerance_px: float | None = None
    sketch_keypoint: list | None = None   # [x, y]; default: from the keypoints CSV


@dataclass
class StudyConfig:
    title: str = DEFAULT_TITLE
    consent_text: str = DEFAULT_CONSENT
    instructions_text: str = DEFAULT_INSTRUCTIONS
    trials_per_participant: int = 125
    annotators_per_keypoint: int = 3
    lease_minutes: float = 60.0
    first_click_minutes: float = 15.0  # a session without a click by then gives its slots back
    # a session whose median server-side response time is under this is flagged as too fast
    # for a person (service/speed.py says why 800 ms); 0 turns the check off
    min_median_response_ms: float = 800.0
    link_key: str = ""                 # the study link's key=...; generated at init when empty
    completion_code: str = ""          # generated at init when empty
    redirect_url: str = ""             # default: Prolific's completion URL with the code
    seed: int = 0
    practice_count: int = 3
    practice_tolerance_px: float = 25.6
    practice_items: list = field(default_factory=list)   # list[ItemSpec]
    catch_per_session: int = 0
    catch_max_failures: int = 0        # a session failing MORE catch trials than this is flagged
    catch_tolerance_px: float = 25.6
    catch_items: list = field(default_factory=list)      # list[ItemSpec]
    categories: list = field(default_factory=list)       # filled at init: class index basis
    # practice is fixed at init (drawn items are written into practice_items); the pairs drawn
    # for practice are taken out of the study: [[photo, sketch], ...]. A study made before has
    # practice_fixed = False and draws its practice when served, without answers.
    practice_fixed: bool = False
    practice_pairs_excluded: list = field(default_factory=list)

    def finalise(self) -> "StudyConfig":
        """Fill generated defaults and check ranges; raises Psc6kError naming the key."""
        if not self.completion_code:
            self.completion_code = "C" + secrets.token_hex(4).upper()
        if not self.link_key:
            self.link_key = secrets.token_urlsafe(12)
        if not self.redirect_url:
            self.redirect_url = PROLIFIC_COMPLETE_URL.format(code=self.completion_code)
        checks = [
            ("trials_per_participant", self.trials_per_participant >= 1),
            ("annotators_per_keypoint", self.annotators_per_keypoint >= 1),
            ("lease_minutes", math.isfinite(self.lease_minutes) and self.lease_minutes > 0),
            ("first_click_minutes", math.isfinite(self.first_click_minutes) and self.first_click_minutes > 0),
            ("min_median_response_ms", math.isfinite(self.min_median_response_ms) and self.min_median_response_ms >= 0),
            ("link_key (8-64 characters A-Z a-z 0-9 _ -)", re.match(LINK_KEY_RE, self.link_key) is not None),
            ("practice.count", self.practice_count >= 0),
            ("practice.tolerance_px", self.practice_tolerance_px > 0),
            ("catch.per_session", self.catch_per_session >= 0),
            ("catch.max_failures", self.catch_max_failures >= 0),
            ("catch.tolerance_px", self.catch_tolerance_px > 0),
        ]
        for key, ok in checks:
            if not ok:
                raise Psc6kError(f"study config: {key} is out of range")
        if self.catch_per_session > len(self.catch_items):
            raise Psc6kError(f"study config: catch.per_session = {self.catch_per_session} but only "
                             f"{len(self.catch_items)} [[catch.items]] are given")
        for kind, items in (("practice", self.practice_items), ("catch", self.catch_items)):
            for i, item in enumerate(items):
                if kind == "catch" and item.answer is None:
                    raise Psc6kError(f"study config: [[catch.items]] #{i + 1} has no answer = [x, y]")
        return self

    @property
    def lease_seconds(self) -> float:
        return self.lease_minutes * 60.0

    @property
    def first_click_seconds(self) -> float:
        return self.first_click_minutes * 60.0

    def study_url(self, base: str = "https://YOUR-HOST") -> str:
        """The URL to paste into Prolific: the participant page with Prolific's placeholders
        and this study's link key."""
        return PROLIFIC_STUDY_URL.format(base=base.rstrip("/"), key=self.link_key)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "StudyConfig":
        """The config stored at init. A study made before link keys existed has none: its
        ``link_key`` stays empty and the server then asks for no key."""
        data = dict(data)
        data["practice_items"] = [ItemSpec(**d) for d in data.get("practice_items", [])]
        data["catch_items"] = [ItemSpec(**d) for d in data.get("catch_items", [])]
        return cls(**data)


_TOP_KEYS = {"title", "consent_text", "instructions_text", "trials_per_participant",
             "annotators_per_keypoint", "lease_minutes", "first_click_minutes", "min_median_response_ms",
             "link_key", "completion_code",
             "redirect_url", "seed", "practice", "catch"}
_PRACTICE_KEYS = {"count", "tolerance_px", "items"}
_CATCH_KEYS = {"per_session", "max_failures", "tolerance_px", "items"}
_ITEM_KEYS = {f.name for f in dataclasses.fields(ItemSpec)}


def _item(raw, where: str) -> ItemSpec:
    if not isinstance(raw, dict):
        raise Psc6kError(f"study config: {where} must be a table")
    unknown = set(raw) - _ITEM_KEYS
    if unknown:
        raise Psc6kError(f"study config: {where}: unknown key(s) {sorted(unknown)}; "
                         f"expected {sorted(_ITEM_KEYS)}")
    for key in ("photo", "sketch", "keypoint"):
        if key not in raw:
            raise Psc6kError(f"study config: {where}: missing {key}")
    for key in ("answer", "sketch_keypoint"):
        v = raw.get(key)
        if v is not None and (not isinstance(v, list) or len(v) != 2
                              or not all(isinstance(t, (int, float)) and math.isfinite(t) for t in v)):
            raise Psc6kError(f"study config: {where}: {key} must be [x, y] (two finite numbers)")
    if not isinstance(raw["keypoint"], int) or not 0 <= raw["keypoint"] < 8:
        raise Psc6kError(f"study config: {where}: keypoint must be an integer 0..7")
    return ItemSpec(**raw)


def load_config(path=None, **overrides) -> StudyConfig:
    """Read ``study.toml`` (if given) and apply non-None ``overrides`` (command-line flags)."""
    cfg = StudyConfig()
    if path is not None:
        path = Path(path)
        try:
            raw = tomllib.loads(read_text(path, what="a study.toml file", max_bytes=1024 * 1024))
        except FileNotFoundError:
            raise Psc6kError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise Psc6kError(f"{path}: not valid TOML: {exc}") from None
        unknown = set(raw) - _TOP_KEYS
        if unknown:
            raise Psc6kError(f"{path}: unknown key(s) {sorted(unknown)}; expected {sorted(_TOP_KEYS)}")
        types = {"title": str, "consent_text": str, "instructions_text": str, "completion_code": str,
                 "redirect_url": str, "link_key": str, "first_click_minutes": (int, float),
                 "min_median_response_ms": (int, float),
                 "trials_per_participant": int, "annotators_per_keypoint": int,
                 "seed": int, "lease_minutes": (int, float)}
        for key, typ in types.items():
            if key in raw:
                if not isinstance(raw[key], typ) or isinstance(raw[key], bool):
                    raise Psc6kError(f"{path}: {key} has the wrong type ({type(raw[key]).__name__})")
                setattr(cfg, key, raw[key])
        for section, keys, prefix in (("practice", _PRACTICE_KEYS, "practice"), ("catch", _CATCH_KEYS, "catch")):
            sec = raw.get(section, {})
            if not isinstance(sec, dict):
                raise Psc6kError(f"{path}: [{section}] must be a table")
            unknown = set(sec) - keys
            if unknown:
                raise Psc6kError(f"{path}: [{section}]: unknown key(s) {sorted(unknown)}; expected {sorted(keys)}")
            items = [_item(it, f"[[{section}.items]] #{i + 1}") for i, it in enumerate(sec.get("items", []))]
            setattr(cfg, f"{prefix}_items", items)
            for key in keys - {"items"}:
                if key in sec:
                    name = {"count": "practice_count", "per_session": "catch_per_session",
                            "max_failures": "catch_max_failures"}.get(key, f"{prefix}_{key}")
                    setattr(cfg, name, sec[key])
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    return cfg
