"""Server-side response times and the human speed floor.

The server measures each click against the moment it first handed out that trial's images
(``trials.served_at``, :func:`.study_info.mark_served`), never the client's ``rt_ms``, which a
script can forge. A session whose median server-side response time is under the study's
``min_median_response_ms`` is *too fast* for a person: it is flagged on the dashboard and in
every export, and its clicks are kept (the researcher decides; nothing is dropped).

Why the median and why 800 ms by default: finding the matching point and confirming it takes a
person at least one aimed click plus a Confirm (or Enter): simple reaction time alone is about
200-250 ms and one aimed pointing movement 0.5-1 s (Fitts' law), so 2-5 s per trial is usual. The
page fetches the next two trials' images ahead, so the server's measure of most trials spans up
to three trials and is larger than the person's own time, never smaller. A median under 0.8 s is
therefore out of human reach, and a median ignores a few quick trials. A click on a trial whose
images the server never served counts as 0 ms (nobody saw it).
"""

from __future__ import annotations

import statistics

from sqlalchemy import select

from .. import db

C, TR = db.clicks, db.trials

_Q_TIMES = (select(C.c.session_id, C.c.created_at, TR.c.served_at)
            .select_from(C.join(TR, TR.c.id == C.c.trial_id)).order_by(C.c.session_id))


def server_rt_ms(created_at: float, served_at: float | None) -> float:
    """Milliseconds from the first serving of a trial (epoch s) to its click (epoch s); 0 when
    the trial was never served before its click."""
    if served_at is None or served_at > created_at:
        return 0.0
    return round((created_at - served_at) * 1000.0, 3)  # epoch floats carry about a microsecond


def too_fast(median_ms: float | None, floor_ms: float) -> bool:
    """Faster than a person: a median under ``floor_ms`` (0 turns the check off)."""
    return floor_ms > 0 and median_ms is not None and median_ms < floor_ms


def session_speeds(conn, floor_ms: float) -> dict[int, dict]:
    """Per session with clicks: ``{"median_server_rt_ms", "too_fast"}`` over all its clicks
    (catch trials and excluded clicks included: every trial is served the same way)."""
    times: dict[int, list[float]] = {}
    for session_id, created_at, served_at in conn.execute(_Q_TIMES):
        times.setdefault(session_id, []).append(server_rt_ms(created_at, served_at))
    out = {}
    for session_id, values in times.items():
        median = float(statistics.median(values))
        out[session_id] = {"median_server_rt_ms": median, "too_fast": too_fast(median, floor_ms)}
    return out
