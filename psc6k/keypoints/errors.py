"""The one exception of the keypoint builder."""

from __future__ import annotations

from psc6k.errors import Psc6kError

__all__ = ["SketchError"]


class SketchError(Psc6kError):
    """A sketch image cannot be turned into keypoints.

    ``reason`` is a short code for summaries and the ``--report`` CSV: ``"unreadable"``,
    ``"empty"``, ``"all_black"``, ``"not_connected"``, ``"too_small"``. ``param``: the
    parameter(s) the message names in backticks (:class:`psc6k.errors.Psc6kError`).
    """

    def __init__(self, message: str, *, reason: str, path=None, param: str | tuple[str, ...] | None = None):
        self.reason, self.path, self.detail = reason, path, message
        super().__init__(f"{path}: {message}" if path is not None else message, param=param)
