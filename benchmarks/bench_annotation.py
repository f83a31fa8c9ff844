"""Load and fault test of the annotation service against a real uvicorn server.

    python benchmarks/bench_annotation.py                       # SQLite, 200 participants x 125 trials
    python benchmarks/bench_annotation.py --db sqlite sqlite-normal postgres --postgres-url postgresql+psycopg://psc6k:psc6k@127.0.0.1:5432/psc6k_bench
    python benchmarks/bench_annotation.py --participants 40 --trials 25   # a quick run

Simulated participants (``--concurrency`` at a time) start a session, click every trial, and
complete; at random some reload (GET the session, resume), send duplicate submits (same
client_id: must get the same body), or abandon (never finish; their lease lapses and the slots go
to later participants). Once, mid-run, the whole server (master and workers) is killed with
SIGKILL and restarted; clients retry with the same client_id. Afterwards the database is read
directly: every click that got a 2xx is there with its coordinates, no slot holds two clicks, the
3 clicks of a keypoint come from 3 different participants, every finished participant got a
completion code. Prints clicks/s and click latency p50/p99 per database side by side with the
target (>= 300 clicks/s, p99 < 100 ms on SQLite).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_CPS, TARGET_P99_MS = 300.0, 100.0
LINK_KEY = "bench-link-key"  # the study link's key=..., sent with every session start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``psc6k annotate serve`` in its own process group, so SIGKILL takes master and workers."""

    def __init__(self, db_url: str, port: int, workers: int, log: Path, sqlite_synchronous: str = "full"):
        self.db_url, self.port, self.workers, self.log = db_url, port, workers, log
        self.sqlite_synchronous = sqlite_synchronous
        self.proc = None
        self.cpu_before = 0.0   # CPU seconds of earlier (killed) server instances

    def cpu_seconds(self) -> float:
        """User + system CPU of the server's processes (master and workers) so far."""
        total = 0.0
        if self.proc is None:
            return self.cpu_before
        tick = os.sysconf("SC_CLK_TCK")
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) == self.proc.pid:  # process group
                total += (int(stat[11]) + int(stat[12])) / tick
        return self.cpu_before + total

    def start(self, timeout: float = 60.0):
        env = dict(os.environ, PSC6K_ADMIN_TOKEN="bench-admin")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "psc6k", "annotate", "serve", "--db", self.db_url, "--port", str(self.port),
             "--workers", str(self.workers), "--log-level", "error",
             "--sqlite-synchronous", self.sqlite_synchronous],
            env=env, stdout=open(self.log, "a"), stderr=subprocess.STDOUT, start_new_session=True)
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/api/study", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log}")
            time.sleep(0.2)
        raise RuntimeError(f"server did not come up in {timeout} s; see {self.log}")

    def kill9(self):
        self.cpu_before = self.cpu_seconds()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Response:
    def __init__(self, status_code: int, body: bytes):
        self.status_code, self.content = status_code, body

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


class RawHttp:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: one connection per simulated
    participant. httpx costs about as much CPU per request as the server does, and client and
    server share this machine's cores."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None

    async def request(self, method: str, url: str, json_body=None) -> Response:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        body = json.dumps(json_body).encode() if json_body is not None else b""
        head = (f"{method} {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        try:
            self.writer.write(head + body)
            await self.writer.drain()
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("server closed the connection")
            status = int(status_line.split()[1])
            length = 0
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            data = await self.reader.readexactly(length) if length else b""
            return Response(status, data)
        except Exception:
            await self.close()
            raise


class Stats:
    def __init__(self):
        self.latencies = []          # seconds, click requests answered 2xx on the first try
        self.timeline = []           # (event, perf_counter at start, seconds): clicks and session starts
        self.acked = {}              # (token, trial_id) -> (x, y, client_id)
        self.status_counts = {}
        self.retries = 0
        self.duplicates = 0
        self.duplicate_mismatch = 0
        self.reloads = 0
        self.completed = 0
        self.abandoned = 0
        self.errors = []
        self.clicks_done = 0


async def request(client, method, url, stats, json=None):
    """Send until the server answers (it may be down after the kill); returns (response, first_try, dt)."""
    attempt = 0
    while True:
        t0 = time.perf_counter()
        try:
            r = await client.request(method, url, json)
            return r, attempt == 0, time.perf_counter() - t0
        except Exception:  # connection refused / reset while the server is down
            attempt += 1
            stats.retries += 1
            if attempt > 600:
                raise
            await asyncio.sleep(0.05 * min(attempt, 10))


async def participant(i, client, stats, rng, args, kill_event):
    pid = f"BENCH{i:05d}"
    t_start = time.perf_counter()
    entry = {"prolific_pid": pid, "study_id": "bench", "session_id": f"s{i}", "link_key": LINK_KEY}
    r, _, _ = await request(client, "POST", "/api/sessions", stats, json=entry)
    if r.status_code not in (200, 201):
        stats.errors.append(f"{pid}: start {r.status_code} {r.text[:200]}")
        return
    body = r.json()
    stats.timeline.append(("start", t_start, time.perf_counter() - t_start))
    token = body["session_token"]
    abandon_at = rng.integers(1, len(body["trials"])) if rng.random() < args.abandon_rate else None
    for n, trial in enumerate(body["trials"]):
        if abandon_at is not None and n == abandon_at:
            stats.abandoned += 1
            return
        if trial["answered"]:
            continue
        if rng.random() < args.reload_rate:  # a reload: fetch the session again and continue from it
            stats.reloads += 1
            rr, _, _ = await request(client, "GET", f"/api/sessions/{token}", stats)
            if rr.status_code != 200 or rr.json()["session_token"] != token:
                stats.errors.append(f"{pid}: reload {rr.status_code}")
            # the page resumes with Prolific's whole triple (another SESSION_ID is refused)
            again, _, _ = await request(client, "POST", "/api/sessions", stats, json=entry)
            if again.json().get("session_token") != token:
                stats.errors.append(f"{pid}: resume gave another session")
        x, y = float(rng.uniform(0, 255)), float(rng.uniform(0, 255))
        cid = f"{pid}-{trial['trial_id']}"
        payload = {"trial_id": trial["trial_id"], "x": x, "y": y, "rt_ms": float(rng.uniform(500, 4000)),
                   "client_id": cid, "display": {"width": 512, "height": 512, "dpr": 2, "blur": 0, "focus": 0}}
        r, first, dt = await request(client, "POST", f"/api/sessions/{token}/clicks", stats, json=payload)
        stats.status_counts[r.status_code] = stats.status_counts.get(r.status_code, 0) + 1
        if r.status_code in (200, 201):
            stats.acked[(token, trial["trial_id"])] = (x, y, cid)
            if first and r.status_code == 201:
                stats.latencies.append(dt)
                stats.timeline.append(("click", time.perf_counter() - dt, dt))
        else:
            stats.errors.append(f"{pid}: click {r.status_code} {r.text[:200]}")
            continue
        stats.clicks_done += 1
        if stats.clicks_done == args.kill_after:
            kill_event.set()
        if rng.random() < args.duplicate_rate:  # a double submit (e.g. a retry after a timeout)
            stats.duplicates += 1
            d, _, _ = await request(client, "POST", f"/api/sessions/{token}/clicks", stats, json=payload)
            if d.status_code not in (200, 201) or d.json() != r.json():
                stats.duplicate_mismatch += 1
        if args.think_ms:
            await asyncio.sleep(rng.uniform(0, 2 * args.think_ms) / 1000)
    r, _, _ = await request(client, "POST", f"/api/sessions/{token}/complete", stats)
    if r.status_code == 200 and r.json().get("completion_code"):
        stats.completed += 1
    else:
        stats.errors.append(f"{pid}: complete {r.status_code} {r.text[:200]}")


async def killer(server, kill_event, stats, log):
    await kill_event.wait()
    t0 = time.time()
    log["killed_at_s"] = time.perf_counter()
    server.kill9()
    log["killed_at_clicks"] = stats.clicks_done
    await asyncio.sleep(1.0)
    await asyncio.to_thread(server.start)
    log["downtime_s"] = time.time() - t0
    log["restart_cpu_s"] = server.cpu_seconds() - server.cpu_before  # imports of the new processes


async def drive(port, server, args, stats):
    kill_event = asyncio.Event()
    kill_log = {}
    if True:
        sem = asyncio.Semaphore(args.concurrency)
        rng0 = np.random.default_rng(args.seed)

        async def one(i):
            async with sem:
                client = RawHttp(port)
                try:
                    await participant(i, client, stats, np.random.default_rng(rng0.integers(1 << 62)), args,
                                      kill_event)
                finally:
                    await client.close()

        tasks = [asyncio.create_task(one(i)) for i in range(args.participants)]
        kill_task = asyncio.create_task(killer(server, kill_event, stats, kill_log)) if args.kill_after else None
        t0 = time.perf_counter()
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
        if kill_task is not None:
            if not kill_event.is_set():
                kill_task.cancel()
            else:
                await kill_task
    return wall, kill_log


def verify(db_url, stats):
    """Read the database directly and check every acknowledged click and every invariant."""
    from sqlalchemy import func, select

    from annotation_app import db
    from annotation_app.service import StudyService

    service = StudyService(db_url)
    problems = []
    with service.read.connect() as conn:
        rows = conn.execute(select(db.sessions.c.token, db.clicks.c.trial_id, db.clicks.c.x, db.clicks.c.y,
                                   db.clicks.c.client_id, db.clicks.c.task_id, db.clicks.c.slot_index,
                                   db.clicks.c.session_id)
                            .select_from(db.clicks.join(db.sessions))).all()
        stored = {(r.token, r.trial_id): r for r in rows}
        for key, (x, y, cid) in stats.acked.items():
            r = stored.get(key)
            if r is None:
                problems.append(f"acknowledged click {key} is not in the database")
            elif (r.x, r.y, r.client_id) != (x, y, cid):
                problems.append(f"click {key} stored as {(r.x, r.y, r.client_id)}, sent {(x, y, cid)}")
        slots = [(r.task_id, r.slot_index) for r in rows if r.slot_index is not None]
        if len(slots) != len(set(slots)):
            problems.append("a slot holds two clicks")
        per_task = {}
        for r in rows:
            if r.slot_index is not None:
                per_task.setdefault(r.task_id, []).append(r.session_id)
        n = service.config.annotators_per_keypoint
        for t, people in per_task.items():
            if len(people) > n or len(set(people)) != len(people):
                problems.append(f"task {t}: clicks from {people}")
        trials = conn.execute(select(db.trials.c.session_id, db.trials.c.task_id)).all()
        if len(trials) != len(set(trials)):
            problems.append("a plan repeats a (pair, keypoint)")
        held = conn.execute(select(db.slots.c.task_id, db.slots.c.holder_session_id)
                            .where(db.slots.c.holder_session_id.is_not(None))).all()
        if len(held) != len(set(held)):
            problems.append("a participant holds two slots of one task")
        n_free = dict(conn.execute(select(db.tasks.c.id, db.tasks.c.n_free)).all())
        unheld = dict(conn.execute(select(db.slots.c.task_id, func.count()).where(
            db.slots.c.holder_session_id.is_(None)).group_by(db.slots.c.task_id)).all())
        bad_free = [t for t, f in n_free.items() if f != unheld.get(t, 0)]
        if bad_free:
            problems.append(f"{len(bad_free)} tasks have n_free out of step with their slots")
        counted = {c: (f, o) for c, f, o in conn.execute(select(db.categories))}
        if counted != {c: (int(f), int(o)) for c, f, o in conn.execute(db.category_counts_query())}:
            problems.append("the per-category counts are out of step with the tasks")
        completed = conn.execute(select(func.count()).select_from(db.sessions)
                                 .where(db.sessions.c.status == "completed")).scalar_one()
    service.close()
    return {"clicks_in_db": len(rows), "acknowledged": len(stats.acked), "completed_sessions_db": completed,
            "problems": problems}


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine spent so far (``/proc/stat``: everything but
    idle and iowait)."""
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process (the simulated participants and the checks)."""
    t = os.times()
    return t.user + t.system


def run_one(kind, args, work: Path):
    from annotation_app.config import StudyConfig
    from annotation_app.study import init_study
    from annotation_app.testing import make_study_files, reset_postgres

    files = make_study_files(work / "files", n_categories=args.categories, photos_per_category=args.photos_per_category)
    if kind.startswith("sqlite"):
        url = f"sqlite:///{work}/bench.db"
    else:
        url = reset_postgres(args.postgres_url)
    config = StudyConfig(trials_per_participant=args.trials, lease_minutes=args.lease_minutes, link_key=LINK_KEY)
    t0 = time.perf_counter()
    init_study(url, files["pairs"], files["images"], config, files["keypoints"], force=True)
    init_s = time.perf_counter() - t0
    port = free_port()
    server = Server(url, port, args.workers, work / f"server_{kind}.log",
                    sqlite_synchronous="normal" if kind == "sqlite-normal" else "full")
    server.start()
    stats = Stats()
    load_before = os.getloadavg()[0]
    try:
        cpu0, busy0, own0 = server.cpu_seconds(), machine_busy_seconds(), own_cpu_seconds()
        wall, kill_log = asyncio.run(drive(port, server, args, stats))
        server_cpu_all = server.cpu_seconds() - cpu0
        # CPU the rest of the machine took meanwhile (other people's work, not this benchmark's)
        others_cpu = machine_busy_seconds() - busy0 - server_cpu_all - (own_cpu_seconds() - own0)
        server_cpu = server_cpu_all - kill_log.get("restart_cpu_s", 0.0)
    finally:
        server.stop()
    load_after = os.getloadavg()[0]
    check = verify(url, stats)
    if args.timeline:
        t0 = min(t for _, t, _ in stats.timeline)
        kill_at = kill_log.get("killed_at_s")
        with open(f"{args.timeline}.{kind}.csv", "w") as fh:
            fh.write("event,start_s,latency_ms\n")
            fh.writelines(f"{e},{t - t0:.4f},{1000 * d:.2f}\n" for e, t, d in stats.timeline)
            if kill_at is not None:
                fh.write(f"kill,{kill_at - t0:.4f},0\n")
    lat = np.array(stats.latencies) * 1000
    starts = np.array([d for e, _, d in stats.timeline if e == "start"]) * 1000
    n_clicks = sum(v for k, v in stats.status_counts.items() if k in (200, 201))
    downtime = kill_log.get("downtime_s", 0.0)
    return {
        "db": kind, "init_s": round(init_s, 2), "wall_s": round(wall, 2), "clicks_2xx": n_clicks,
        "clicks_per_s": n_clicks / wall, "clicks_per_s_excluding_downtime": n_clicks / max(wall - downtime, 1e-9),
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
        "max_ms": float(lat.max()) if lat.size else None,
        "server_cpu_ms_per_click": 1000 * server_cpu / max(n_clicks, 1),
        "capacity_2_cores": 2 * n_clicks / max(server_cpu, 1e-9),
        "status_counts": stats.status_counts, "retries": stats.retries, "reloads": stats.reloads,
        "duplicates": stats.duplicates, "duplicate_mismatch": stats.duplicate_mismatch,
        "abandoned": stats.abandoned, "completed": stats.completed, "errors": stats.errors[:10],
        "n_errors": len(stats.errors), "load_before": load_before, "load_after": load_after,
        "others_cores": max(others_cpu, 0.0) / wall,
        "start_p50_ms": float(np.percentile(starts, 50)) if starts.size else None,
        "start_p99_ms": float(np.percentile(starts, 99)) if starts.size else None, **kill_log, **check,
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", nargs="+", choices=["sqlite", "sqlite-normal", "postgres"], default=["sqlite", "sqlite-normal"],
                   help="sqlite = synchronous=FULL (the default of the service: fsync per click); "
                        "sqlite-normal = synchronous=NORMAL (survives kill -9, not power loss)")
    p.add_argument("--postgres-url", default=os.environ.get("PSC6K_BENCH_POSTGRES_URL",
                                                              "postgresql+psycopg://psc6k:psc6k@127.0.0.1:5432/psc6k_bench"))
    p.add_argument("--participants", type=int, default=200)
    p.add_argument("--trials", type=int, default=125, help="trials per participant (scale down for a quick run)")
    p.add_argument("--categories", type=int, default=125)
    p.add_argument("--photos-per-category", type=int, default=10,
                   help="pairs per category (x 8 keypoints x 3 slots = slots per category)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=16,
                   help="participants clicking at the same time, with no pause between clicks (the other "
                        "participants are between sessions); 200 real people with 2-5 s per trial offer ~40-100 clicks/s")
    p.add_argument("--think-ms", type=float, default=0.0, help="mean pause between a participant's clicks")
    p.add_argument("--reload-rate", type=float, default=0.01)
    p.add_argument("--duplicate-rate", type=float, default=0.02)
    p.add_argument("--abandon-rate", type=float, default=0.05)
    p.add_argument("--lease-minutes", type=float, default=1.5, help="short, so abandoned slots are released mid-run")
    p.add_argument("--kill-after", type=int, default=None, help="clicks before the kill -9 (default: 40%% of the run; 0 = no kill)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="also write the results as JSON here")
    p.add_argument("--timeline", help="write every first-try click and session start as CSV "
                   "(event, start_s, latency_ms) here, to see where the tail comes from")
    args = p.parse_args(argv)
    if args.kill_after is None:
        args.kill_after = int(0.4 * args.participants * args.trials)
    return args


def main(argv=None):
    args = parse_args(argv)
    kinds = args.db
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_annot_") as tmp:
        for kind in kinds:
            work = Path(tmp) / kind
            work.mkdir()
            print(f"[{kind}] {args.participants} participants x {args.trials} trials, {args.workers} workers, "
                  f"concurrency {args.concurrency} ...", flush=True)
            res = run_one(kind, args, work)
            results.append(res)
            if res["problems"] or res["n_errors"]:
                log = (work / f"server_{kind}.log").read_text()[-3000:]
                print(f"[{kind}] server log tail:\n{log}")
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2, default=str))
    return 0 if print_table(results) else 1


def print_table(results: list[dict]) -> bool:
    """The side-by-side table; False when a check failed."""
    print()
    print(f"{'':34}" + "".join(f"{r['db']:>14}" for r in results) + f"{'target (SQLite)':>16}")

    def row(name, key, fmt, target=""):
        vals = "".join(f"{(fmt.format(r[key]) if r.get(key) is not None else '-'):>14}" for r in results)
        print(f"{name:34}{vals}{target:>14}")

    row("clicks stored (2xx)", "clicks_2xx", "{:d}")
    row("clicks/s (whole run, incl. kill)", "clicks_per_s", "{:.0f}", f">= {TARGET_CPS:.0f}")
    row("clicks/s (excluding downtime)", "clicks_per_s_excluding_downtime", "{:.0f}")
    row("click latency p50 (ms)", "p50_ms", "{:.1f}")
    row("click latency p99 (ms)", "p99_ms", "{:.1f}", f"< {TARGET_P99_MS:.0f}")
    row("click latency max (ms)", "max_ms", "{:.1f}")
    row("session start p50 (ms)", "start_p50_ms", "{:.0f}")
    row("session start p99 (ms)", "start_p99_ms", "{:.0f}")
    row("server CPU per click (ms)", "server_cpu_ms_per_click", "{:.2f}")
    row("=> clicks/s on 2 idle cores", "capacity_2_cores", "{:.0f}")
    row("kill -9 downtime (s)", "downtime_s", "{:.1f}")
    row("client retries", "retries", "{:d}")
    row("reloads / duplicates", "reloads", "{:d}")
    row("duplicate replies differing", "duplicate_mismatch", "{:d}", "0")
    row("abandoned / completed", "abandoned", "{:d}")
    row("completed sessions", "completed", "{:d}")
    row("acknowledged clicks", "acknowledged", "{:d}")
    row("clicks in database", "clicks_in_db", "{:d}")
    row("client-side errors", "n_errors", "{:d}", "0")
    row("load average (1 min) before", "load_before", "{:.1f}")
    row("load average (1 min) after", "load_after", "{:.1f}")
    row("cores used by other processes", "others_cores", "{:.2f}", "0 (quiet)")
    ok = True
    for r in results:
        for prob in r["problems"]:
            print(f"[{r['db']}] INVARIANT VIOLATED: {prob}")
            ok = False
        for e in r["errors"]:
            print(f"[{r['db']}] error: {e}")
        if r["n_errors"] or r["duplicate_mismatch"]:
            ok = False
    print("\nall acknowledged clicks stored, all invariants hold" if ok else "\nFAILED")
    return ok


if __name__ == "__main__":
    sys.exit(main())
