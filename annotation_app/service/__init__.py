"""The annotation service's logic, independent of HTTP, one module per concern:

* :mod:`.store` -- the database: engines, the write transaction, the study row, tokens;
* :mod:`.planning` -- which trials a new session gets, claiming their slots;
* :mod:`.leases` -- releasing the slots of lapsed or click-less sessions;
* :mod:`.sessions` -- study entry (link key), resume, the session body, completion;
* :mod:`.clicks` -- storing a click durably, idempotent retries;
* :mod:`.catch` -- catch trials and flagging;
* :mod:`.study_info` -- texts, practice trials, images;
* :mod:`.admin_stats` -- progress, the live view, per-participant quality;
* :mod:`.exports` -- raw clicks and the aggregated ground truth.

Errors a caller can act on are :mod:`psc6k.errors` request errors (``NotFoundError``,
``ConflictError``, ``GoneError``, ``PermissionDeniedError``, ...) carrying the extra JSON fields;
the web app maps them onto HTTP by the one table (docs/errors.md). Nothing here knows HTTP.
"""

from __future__ import annotations

from .admin_stats import AdminStats
from .clicks import Clicks
from .exports import Exports
from .leases import Leases
from .sessions import Sessions
from .store import StudyStore, iso
from .study_info import StudyInfo

__all__ = ["StudyService", "StudyStore", "iso"]


class StudyService:
    """One study in one database: the store plus one object per concern.

    Parameters are those of :class:`StudyStore` (``db_url``, ``image_root``, ``clock``,
    ``pool_size``, ``sqlite_synchronous``).

    Attributes
    ----------
    store, info, sessions, clicks, leases, stats, exports
    """

    def __init__(self, db_url: str, **store_options):
        self.store = StudyStore(db_url, **store_options)
        self.info = StudyInfo(self.store)
        self.sessions = Sessions(self.store)
        self.clicks = Clicks(self.store)
        self.leases = Leases(self.store)
        self.stats = AdminStats(self.store)
        self.exports = Exports(self.store)

    @classmethod
    def from_settings(cls, settings, **store_options) -> "StudyService":
        return cls(settings.db_url, image_root=settings.image_root, pool_size=settings.pool_size,
                   sqlite_synchronous=settings.sqlite_synchronous, **store_options)

    # the parts tests and tools reach most often
    @property
    def config(self):
        return self.store.config

    @property
    def read(self):
        return self.store.read

    @property
    def write(self):
        return self.store.write

    @property
    def clock(self):
        return self.store.clock

    def close(self) -> None:
        self.store.close()
