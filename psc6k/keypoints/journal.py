"""Crash-safe output of a long keypoint batch: the append-only journal a killed run resumes
from, and CSVs written whole (temporary file, fsync, rename) or not at all."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from psc6k.csvsafe import safe_row
from psc6k.errors import ParameterError, Psc6kError

__all__ = ["JOURNAL_FORMAT", "JOURNAL_SYNC_EVERY", "Journal", "journal_path", "write_csv_atomically"]

JOURNAL_FORMAT = "psc6k-build-keypoints-journal/1"
#: Results between two fsyncs of the journal (a kill loses at most these; they are redone).
JOURNAL_SYNC_EVERY = 64


def journal_path(out: Path) -> Path:
    """The journal of a run writing ``out``: ``OUT.journal`` beside it."""
    return out.with_name(out.name + ".journal")


class Journal:
    """Append-only JSON-lines record of a run: a header line with the settings, then one
    result record per sketch in input order.  A torn last line (a kill mid-write) is ignored
    on reading; the sketch is simply processed again."""

    def __init__(self, path: Path, settings: dict, resume: bool):
        self.path = path
        self.done: set[str] = set()
        if path.exists() and not resume:
            raise ParameterError(f"{path}: an interrupted run's journal is there; pass `resume` to continue "
                                 "it, or delete it to start over", param="resume")
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


def write_csv_atomically(path: Path, header, rows) -> None:
    """Write a CSV through ``path.tmp`` + fsync + rename: never a half-written ``path``.  Cells
    pass :func:`psc6k.csvsafe.safe_row` (no spreadsheet formulas), as in every psc6k CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(safe_row(header))
        writer.writerows(safe_row(r) for r in rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

