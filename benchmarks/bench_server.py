"""Load test of ``psc6k serve`` on 127.0.0.1, side by side with in-process scoring.

1. Full-size scorings: ``--concurrency`` (default 20) simultaneous POST /score of a 6,250-pair
   16 x 16 flow submission; reports per-request latency, wall time and the server's peak RSS,
   and checks every reply against ``psc6k.pck.evaluate`` run in this process on the same bytes.
   Reference: the same load + evaluate in-process (what ``psc6k eval`` does), one at a time.
2. Burst of small keypoint submissions (125 pairs) against a second server: requests/s, p50 and
   p99 latency, every reply checked; reference: in-process load + evaluate, serially.

3. Hostile requests (issue #12), each sent while a legitimate full-size NPZ is scored: the
   server's peak RSS and the legitimate request's latency, side by side with the plain case
   (no attack): a gzip JSON object bomb, uint8 flows declaring ~1 GB, a gzip bomb up to the
   decompression cap, 34 stalled uploads, and a 6,250-pair JSON submission (the streaming reader).
4. With no proxy in front (issue #20), for the chosen server (``psc6k serve`` / ``psc6k annotate
   serve`` through ``psc6k_web.server``) and the alternatives compared (plain uvicorn with httptools
   as before, uvicorn with h11 and a 64 KiB ``h11_max_incomplete_event_size``, Hypercorn, Granian;
   those not installed are skipped): throughput of small ``/score`` requests and of clicks (16
   clients, keep-alive) with the server's CPU per request; then legitimate ``/score`` and click
   latency (p50 / p99, a kept-alive connection, plus a fresh connection every 0.25 s) and peak
   server RSS with no attack and under each attack: (a) 4 connections sending a never-ending header
   (reconnecting when closed), (b) 2,000 connections from 20 addresses sending half a header (held
   12 s, past the 10 s head timeouts), (c) 200 stalled uploads from 200 addresses (127.0.0.2 ...).
   Each attack lasts seconds; sockets are loopback only and closed at the end. Prints a table for
   docs/server.md.

Usage: ``python benchmarks/bench_server.py [--concurrency 20] [--format npz|json.gz] [--workers 1]
[--skip-full] [--skip-burst] [--skip-hostile] [--skip-no-proxy] [--servers bounded uvicorn-httptools ...]``.
Timings depend on the machine's load; the shared development machine has 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from psc6k import cli
from psc6k.formats import read_annotations, write_test_pairs_ps
from psc6k.pck import evaluate
from psc6k.submission import load_submission, save_submission
from psc6k.testing import make_annotations, make_flow_submission, make_keypoint_submission

CONTENT_TYPES = {"npz": "application/octet-stream", "json": "application/json", "json.gz": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int, key: str) -> int:
    """VmRSS / VmHWM of a process in bytes (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        out = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    pids = [int(p) for p in out]
    return pids + [g for p in pids for g in children(p)]


class RssSampler(threading.Thread):
    """Peak of the summed RSS of the server and its workers, sampled every 20 ms (VmHWM is
    per process; the sum of per-process peaks would overstate a multi-worker peak)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            total = sum(proc_status(p, "VmRSS") for p in [self.pid, *children(self.pid)])
            self.peak = max(self.peak, total)
            time.sleep(0.02)


def start_server(csv: Path, db: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "psc6k", "serve", "--annotations", str(csv), "--port", str(port), "--db", db,
           "--log-level", "warning", "--no-seed", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    wait_up(proc, base + "/health")
    return proc, base


def wait_up(proc: subprocess.Popen, url: str, name: str = "server") -> None:
    """Block until GET ``url`` answers 200; exit with the server's stderr if it dies or takes 120 s."""
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{name} failed to start:\n{proc.stderr.read().decode()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            raise SystemExit(f"{name} did not start within 120 s")
        time.sleep(0.25)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def reference(ann, data: bytes) -> tuple[dict, float]:
    """In-process load + evaluate (the ``psc6k eval`` path); returns the JSON-normalised result."""
    t0 = time.perf_counter()
    result = evaluate(ann, load_submission(data)).to_dict()
    return json.loads(json.dumps(result)), time.perf_counter() - t0


def post(base: str, data: bytes, content_type: str) -> tuple[float, int, dict]:
    t0 = time.perf_counter()
    r = httpx.post(base + "/score", content=data, headers={"content-type": content_type}, timeout=600)
    elapsed = time.perf_counter() - t0
    return elapsed, r.status_code, (r.json() if r.headers.get("content-type", "").startswith("application/json")
                                    else {"detail": r.text})


def pct(values, q) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def check(reply: dict, status: int, expected: dict) -> bool:
    if status != 200:
        return False
    reply = dict(reply)
    reply.pop("submission_id", None)
    return reply == expected


def bench_full(tmp: Path, args) -> None:
    print(f"== full-size flow submissions: 6,250 pairs, 16x16 flows, format {args.format}, "
          f"{args.concurrency} concurrent, {args.workers} worker(s), {args.max_concurrent} scoring slot(s) each")
    ann = make_annotations(125, 10, 5)
    csv = tmp / "full.csv"
    write_test_pairs_ps(ann, csv)
    path = save_submission(make_flow_submission(ann), tmp / f"full.{args.format}")
    data = path.read_bytes()
    print(f"submission: {len(data) / 1e6:.1f} MB")
    ann = read_annotations(csv)
    expected, t_ref = reference(ann, data)
    _, t_ref2 = reference(ann, data)
    t_ref = min(t_ref, t_ref2)
    db = args.db or f"sqlite:///{tmp / 'full.sqlite'}"
    proc, base = start_server(csv, db, ["--workers", str(args.workers), "--max-concurrent", str(args.max_concurrent),
                                        "--max-pending", str(max(32, args.concurrency))])
    try:
        idle_rss = sum(proc_status(p, "VmRSS") for p in [proc.pid, *children(proc.pid)])
        single, status, reply = post(base, data, CONTENT_TYPES[args.format])
        assert check(reply, status, expected), (status, str(reply)[:300])
        single2, _, _ = post(base, data, CONTENT_TYPES[args.format])
        single = min(single, single2)
        sampler = RssSampler(proc.pid)
        sampler.start()
        health, done = [], threading.Event()

        def poll_health():  # the event loop must keep answering while scorings run in threads
            with httpx.Client(base_url=base, timeout=60) as client:
                while not done.is_set():
                    t = time.perf_counter()
                    client.get("/health")
                    health.append(time.perf_counter() - t)
                    time.sleep(0.1)

        poller = threading.Thread(target=poll_health, daemon=True)
        poller.start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(lambda _: post(base, data, CONTENT_TYPES[args.format]), range(args.concurrency)))
        wall = time.perf_counter() - t0
        done.set()
        poller.join()
        sampler.stop.set()
        sampler.join()
        hwm = [proc_status(p, "VmHWM") for p in [proc.pid, *children(proc.pid)]]
    finally:
        stop_server(proc)
    latencies = [r[0] for r in results]
    ok = sum(check(r[2], r[1], expected) for r in results)
    statuses = sorted({r[1] for r in results})
    print(f"{'':<38}{'in-process (psc6k eval path)':>30}{'server':>14}")
    print(f"{'one scoring, latency':<38}{t_ref:>28.2f} s{single:>12.2f} s")
    print(f"{f'{args.concurrency} scorings, wall time':<38}{args.concurrency * t_ref:>24.2f} s (*){wall:>12.2f} s")
    print(f"{f'{args.concurrency} concurrent: latency p50 / max':<38}{'':>30}"
          f"{statistics.median(latencies):>6.2f} / {max(latencies):.2f} s")
    print(f"{'peak RSS of the server (sampled sum)':<38}{'':>30}{sampler.peak / 2**20:>10.0f} MiB")
    print(f"{'  per-process VmHWM':<38}{'':>30}{', '.join(f'{h / 2**20:.0f}' for h in hwm):>10} MiB "
          f"(idle {idle_rss / 2**20:.0f} MiB)")
    print(f"{'GET /health meanwhile: p50 / max':<38}{'':>30}{1000 * pct(health, 50):>6.0f} / "
          f"{1000 * max(health, default=float('nan')):.0f} ms ({len(health)} polls)")
    print(f"{'replies identical to in-process':<38}{'':>30}{ok:>7d} / {len(results)}  (statuses {statuses})")
    print(f"(*) serial in-process estimate: {args.concurrency} x the single in-process time")
    if ok != len(results):
        raise SystemExit("some replies differ from in-process scoring")


def bench_burst(tmp: Path, args) -> None:
    print(f"\n== burst of small keypoint submissions: {args.burst} requests, {args.burst_concurrency} concurrent, "
          "125 pairs each (JSON)")
    ann = make_annotations(125, 1, 1)
    csv = tmp / "small.csv"
    write_test_pairs_ps(ann, csv)
    data = save_submission(make_keypoint_submission(ann), tmp / "small.json").read_bytes()
    ann = read_annotations(csv)
    expected, _ = reference(ann, data)
    t0 = time.perf_counter()
    n_ref = 50
    for _ in range(n_ref):
        reference(ann, data)
    ref_rate = n_ref / (time.perf_counter() - t0)
    db = args.db or f"sqlite:///{tmp / 'small.sqlite'}"
    proc, base = start_server(csv, db, ["--workers", str(args.workers), "--max-concurrent", str(args.max_concurrent),
                                        "--max-pending", str(max(32, args.burst_concurrency))])
    try:
        with httpx.Client(base_url=base, timeout=120) as warm:
            warm.post("/score", content=data, headers={"content-type": "application/json"})
        local = threading.local()

        def one(_):
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = httpx.Client(base_url=base, timeout=120)
            t = time.perf_counter()
            r = client.post("/score", content=data, headers={"content-type": "application/json"})
            return time.perf_counter() - t, r.status_code, r.json()

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.burst_concurrency) as pool:
            results = list(pool.map(one, range(args.burst)))
        wall = time.perf_counter() - t0
    finally:
        stop_server(proc)
    latencies = [r[0] for r in results]
    ok = sum(check(r[2], r[1], expected) for r in results)
    print(f"{'':<38}{'in-process, serial':>30}{'server':>14}")
    print(f"{'throughput':<38}{ref_rate:>24.1f} req/s{len(results) / wall:>8.1f} req/s")
    print(f"{'latency p50 / p99':<38}{1000 / ref_rate:>22.1f} ms (mean){1000 * pct(latencies, 50):>7.0f} / "
          f"{1000 * pct(latencies, 99):.0f} ms")
    print(f"{'replies identical to in-process':<38}{'':>30}{ok:>7d} / {len(results)}")
    if ok != len(results):
        raise SystemExit("some replies differ from in-process scoring")


def _hostile_bodies(ann_small) -> list[tuple[str, bytes, dict, int]]:
    """(name, body, headers, how many at once) of each attack."""
    import gzip
    import io

    import numpy as np

    bomb = gzip.compress(b'{"psc6k_submission": 1, "kind": "flow", "junk": [' + b"[]," * 80_000_000 + b"[]]}", 6)
    n = 40  # uint8 flows of 2500 x 2500: 40 pairs declare 0.5 GB per direction, 1 GB in all
    buf = io.BytesIO()
    zeros = np.zeros((n, 2500, 2500, 2), np.uint8)
    np.savez_compressed(buf, photo=np.array(ann_small.photo[:n]), sketch=np.array(ann_small.sketch[:n]),
                        sketch_to_photo=zeros, photo_to_sketch=zeros)
    cap = gzip.compress(b'{"method": "' + b"a[" * (600 * 2**20), 1)
    pair = (b'{"photo": "p", "sketch": "s", "sketch_to_photo": [' + b"[1, 2], " * 7 + b'[1, 2]], "photo_to_sketch": ['
            + b"[1, 2], " * 7 + b"[1, 2]]},")
    pairs_bomb = gzip.compress(b'{"psc6k_submission": 1, "kind": "keypoints", "pairs": [' + pair * 99_000, 6)
    gz = {"content-type": "application/json", "content-encoding": "gzip"}
    return [("JSON object bomb (gzip)", bomb, gz, 1),
            ("uint8 flows 2500x2500 (NPZ)", buf.getvalue(), {"content-type": "application/octet-stream"}, 1),
            ("gzip string bomb (1.2 GB)", cap, gz, 1),
            ("99,000 duplicate keypoint pairs", pairs_bomb, gz, 1)]


def bench_hostile(tmp: Path, args) -> None:
    print("\n== hostile requests, each while a legitimate 6,250-pair 16x16 NPZ is scored (default settings)")
    ann = make_annotations(125, 10, 5)
    csv = tmp / "hostile.csv"
    write_test_pairs_ps(ann, csv)
    legit = save_submission(make_flow_submission(ann), tmp / "legit.npz").read_bytes()
    legit_json = save_submission(make_flow_submission(ann), tmp / "legit.json").read_bytes()
    expected, _ = reference(read_annotations(csv), legit)
    cases = _hostile_bodies(ann)
    db = args.db or f"sqlite:///{tmp / 'hostile.sqlite'}"
    proc, base = start_server(csv, db, ["--max-decompressed-mb", "1200"])
    rows = []
    try:
        post(base, legit, "application/octet-stream")  # warm up

        def legit_under(attack) -> tuple[float, int, float, str]:
            sampler = RssSampler(proc.pid)
            sampler.start()
            outcome = attack() if attack else None
            t, status, reply = post(base, legit, "application/octet-stream")
            assert check(reply, status, expected), (status, str(reply)[:300])
            detail = outcome() if outcome else ""
            sampler.stop.set()
            sampler.join()
            return t, status, sampler.peak, detail

        rows.append(("plain (no attack)",) + legit_under(None))
        for name, body, headers, _ in cases:
            def attack(body=body, headers=headers):
                result = {}

                def send():
                    t = time.perf_counter()
                    r = httpx.post(base + "/score", content=body, headers=headers, timeout=600)
                    result["v"] = f"{r.status_code} in {time.perf_counter() - t:.2f} s ({len(body) / 1e3:.0f} KB sent)"
                th = threading.Thread(target=send)
                th.start()
                time.sleep(0.05)
                return lambda: (th.join(), result.get("v", "?"))[1]
            rows.append((name,) + legit_under(attack))

        def stall():
            socks = []
            for k in range(34):
                sock = socket.socket()
                sock.bind((f"127.0.0.{k + 2}", 0))
                sock.connect(("127.0.0.1", int(base.rsplit(":", 1)[1])))
                sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 1000000\r\n\r\n{")
                socks.append(sock)
            time.sleep(0.3)
            return lambda: ([s.close() for s in socks], "34 held open, none answered yet")[1]
        rows.append(("34 stalled uploads",) + legit_under(stall))

        def json_legit():
            result = {}

            def send():
                t = time.perf_counter()
                r = httpx.post(base + "/score", content=legit_json, headers={"content-type": "application/json"},
                               timeout=600)
                result["v"] = f"{r.status_code} in {time.perf_counter() - t:.2f} s ({len(legit_json) / 1e6:.0f} MB JSON)"
            th = threading.Thread(target=send)
            th.start()
            time.sleep(0.05)
            return lambda: (th.join(), result.get("v", "?"))[1]
        rows.append(("6,250-pair JSON (legit, streamed)",) + legit_under(json_legit))
    finally:
        stop_server(proc)
    print(f"{'case':<36}{'legit latency':>14}{'peak server RSS':>17}   other request")
    for name, t, status, peak, detail in rows:
        print(f"{name:<36}{t:>12.2f} s{peak / 2**20:>13.0f} MiB   {detail}")
    print(f"(legitimate replies identical to in-process scoring: {len(rows)} / {len(rows)})")


# -- 4. with no proxy in front: the ASGI servers compared (issue #20) ----------------------------------
KIB = 1024
SERVERS = ["bounded", "uvicorn-httptools", "uvicorn-h11", "hypercorn", "granian"]
SERVER_LABELS = {"bounded": "uvicorn+httptools, bounded (chosen)", "uvicorn-httptools": "uvicorn+httptools (before)",
                 "uvicorn-h11": "uvicorn+h11, 64 KiB", "hypercorn": "Hypercorn (h11), 64 KiB, 10 s",
                 "granian": "Granian, 64 KiB, 10 s"}
ATTACKS = ["none", "header flood", "half-open flood", "upload stalls"]
LINK_KEY = "bench-link-key"


def _variant_serve(name: str):
    """A drop-in for ``psc6k_web.server.serve`` that runs the app with another server (one worker),
    configured as close to ``ServerLimits()`` as that server allows."""
    def serve(app, *, host, port, limits=None, workers=1, log_level="warning", factory=False):
        import asyncio
        if name.startswith("uvicorn"):
            import uvicorn
            extra = {"http": "h11", "h11_max_incomplete_event_size": 64 * KIB} if name == "uvicorn-h11" else \
                {"http": "httptools"}
            uvicorn.run(app, host=host, port=port, log_level=log_level, limit_concurrency=None, timeout_keep_alive=5,
                        proxy_headers=False, **extra)
        elif name == "hypercorn":
            from hypercorn.asyncio import serve as hserve
            from hypercorn.config import Config
            config = Config()
            config.bind = [f"{host}:{port}"]
            config.h11_max_incomplete_size = 64 * KIB
            config.read_timeout = 10
            config.keep_alive_timeout = 5
            config.backlog = 2048
            config.loglevel = "WARNING"
            config.accesslog = None
            asyncio.run(hserve(app, config))
        elif name == "granian":
            from granian.constants import HTTPModes, Interfaces
            from granian.http import HTTP1Settings
            from granian.server.embed import Server
            server = Server(app, address=host, port=port, interface=Interfaces.ASGI, http=HTTPModes.http1,
                            backlog=2048, http1_settings=HTTP1Settings(header_read_timeout=10_000,
                                                                       max_buffer_size=64 * KIB),
                            log_enabled=False)
            asyncio.run(server.serve())
        else:
            raise SystemExit(f"unknown server {name}")
    return serve


def run_variant(name: str, argv: list[str]) -> int:
    """``psc6k <argv>`` with its server swapped for ``name`` (the command's own set-up runs unchanged)."""
    import psc6k_web.server  # FastAPI / uvicorn: loaded by the variants only

    psc6k_web.server.serve = _variant_serve(name)
    return cli.main(argv)


def _available(name: str) -> bool:
    module = {"hypercorn": "hypercorn", "granian": "granian", "uvicorn-h11": "h11"}.get(name, "uvicorn")
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def _start(name: str, argv: list[str], probe: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    argv = [*argv, "--port", str(port)]
    cmd = ([sys.executable, "-m", "psc6k", *argv] if name == "bounded" else
           [sys.executable, str(Path(__file__).resolve()), "--serve-variant", name, "--", *argv])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PSC6K_ADMIN_TOKEN": "bench-admin"})
    wait_up(proc, f"http://127.0.0.1:{port}{probe}", name)
    return proc, port


def _cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return total


class _App:
    """What a legitimate client of one app sends: ``request(client)`` returns the status."""

    def __init__(self, kind: str, tmp: Path):
        self.kind = kind
        if kind == "scoring":
            ann = make_annotations(125, 1, 1)
            csv = tmp / "np_small.csv"
            write_test_pairs_ps(ann, csv)
            self.body = save_submission(make_keypoint_submission(ann), tmp / "np_small.json").read_bytes()
            self.db_arg = f"sqlite:///{tmp / 'np.sqlite'}"
            self.argv = ["serve", "--annotations", str(csv), "--db", self.db_arg, "--no-seed",
                         "--log-level", "warning", "--bootstrap", "0", "--max-pending", "64"]
            self.probe, self.upload = "/health", "/score"
        else:
            from annotation_app.config import StudyConfig
            from annotation_app.study import init_study
            from annotation_app.testing import make_study_files
            files = make_study_files(tmp / "np_files", n_categories=40, photos_per_category=4)
            self.db = f"sqlite:///{tmp / 'np_study.db'}"
            init_study(self.db, files["pairs"], files["images"],
                       StudyConfig(trials_per_participant=125, annotators_per_keypoint=50, link_key=LINK_KEY),
                       files["keypoints"], force=True)
            self.db_arg = self.db
            self.argv = ["annotate", "serve", "--db", self.db, "--log-level", "warning"]
            self.probe = "/api/study"
        self.participants = 0

    def session(self, base: str) -> list[str]:
        """A new participant: its token and trial ids (annotation app), as click URLs + payloads."""
        self.participants += 1
        pid = f"NP{os.getpid()}x{self.participants:05d}"
        r = httpx.post(base + "/api/sessions", json={"prolific_pid": pid, "study_id": "np", "session_id": pid,
                                                      "link_key": LINK_KEY}, timeout=30)
        r.raise_for_status()
        body = r.json()
        return [(f"/api/sessions/{body['session_token']}/clicks",
                 {"trial_id": t["trial_id"], "x": 10.0, "y": 20.0, "rt_ms": 900.0, "client_id": f"{pid}-{t['trial_id']}",
                  "display": {"width": 512, "height": 512, "dpr": 2, "blur": 0, "focus": 0}})
                for t in body["trials"] if not t["answered"]]

    def upload_path(self, base: str) -> str:
        return self.upload if self.kind == "scoring" else self.session(base)[0][0]


async def _throughput(app: _App, port: int, clients: int, per_client: int) -> tuple[int, float]:
    """``clients`` keep-alive clients, ``per_client`` requests each; returns (answered 2xx, wall s)."""
    import asyncio

    from bench_annotation import RawHttp
    base = f"http://127.0.0.1:{port}"
    if app.kind == "annotation":
        work = [app.session(base)[:per_client] for _ in range(clients)]
    else:
        work = [[("/score", None)] * per_client for _ in range(clients)]
    done = 0

    async def one(items):
        nonlocal done
        client = RawHttp(port)
        try:
            for url, payload in items:
                try:  # /score: the raw client sends JSON; the submission is JSON already
                    r = await client.request("POST", url, json.loads(app.body) if payload is None else payload)
                except OSError:
                    continue  # counted as not answered
                done += r.status_code in (200, 201)
        finally:
            await client.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(items) for items in work))
    return done, time.perf_counter() - t0


# -- the attacks: each returns a stop() that ends it and reports one line -------------------------
def _raise_nofile(need: int) -> int:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _flood_process(port: int, n: int, per_connection: int, stop, connections, sent_mib) -> None:
    chunk = b"a" * 2**18

    def flood():
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    with connections.get_lock():
                        connections.value += 1
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Flood: ")
                    sent = 0
                    while sent < per_connection and not stop.is_set():
                        sock.sendall(chunk)
                        sent += len(chunk)
                        with sent_mib.get_lock():
                            sent_mib.value += len(chunk) / 2**20
            except OSError:
                time.sleep(0.01)

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _header_flood(port: int, app: _App, base: str, n: int = 4, per_connection: int = 64 * 2**20):
    """``n`` connections each sending a never-ending header (up to ``per_connection`` bytes, then a
    new connection), from a separate process: the attacker is not this process's legitimate client."""
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    stop, connections, sent_mib = ctx.Event(), ctx.Value("i", 0), ctx.Value("d", 0.0)
    proc = ctx.Process(target=_flood_process, args=(port, n, per_connection, stop, connections, sent_mib),
                       daemon=True)
    proc.start()

    def end():
        stop.set()
        proc.join(15)
        if proc.is_alive():
            proc.kill()
        return f"{n} senders, {connections.value} connections, {sent_mib.value:.0f} MiB sent"
    return end


def _connect_many(targets: list[tuple[str, int]], port: int, head: bytes, deadline_s: float) -> list[socket.socket]:
    """Non-blocking connects from each (source address, count); the connected ones send ``head``."""
    import selectors
    socks, pending = [], []
    for source, count in targets:
        for _ in range(count):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.bind((source, 0))
                s.connect_ex(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            pending.append(s)
    sel = selectors.DefaultSelector()
    for s in pending:
        sel.register(s, selectors.EVENT_WRITE)
    deadline = time.time() + deadline_s
    while pending and time.time() < deadline:
        for key, _ in sel.select(timeout=0.1):
            s = key.fileobj
            sel.unregister(s)
            pending.remove(s)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                try:
                    s.send(head)
                    socks.append(s)
                    continue
                except OSError:
                    pass
            s.close()
    for s in pending:
        sel.unregister(s)
        s.close()
    return socks


def _still_open(sock: socket.socket) -> bool:
    """Whether the server still holds ``sock`` open (drains what it sent; EOF or reset: closed)."""
    try:
        while True:
            if not sock.recv(65536, socket.MSG_DONTWAIT):
                return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def _held(socks: list[socket.socket], what: str, hold_s: float = 0.0):
    """stop(): after ``hold_s`` since the attack began, count the connections still open, close all."""
    t0 = time.perf_counter()

    def end():
        time.sleep(max(0.0, hold_s - (time.perf_counter() - t0)))
        open_ = sum(_still_open(s) for s in socks)
        for s in socks:
            s.close()
        return f"{len(socks)} {what}, {open_} still open after {time.perf_counter() - t0:.0f} s"
    return end


def _half_open_flood(port: int, app: _App, base: str, n: int = 2000, sources: int = 20):
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Half: "
    socks = _connect_many([(f"127.0.1.{k + 1}", n // sources) for k in range(sources)], port, head, 5.0)
    return _held(socks, "half heads sent", hold_s=12.0)  # past the 10 s head timeouts of those that have one


def _upload_stalls(port: int, app: _App, base: str, n: int = 200):
    path = app.upload_path(base)
    declared = 1_000_000 if app.kind == "scoring" else 8000
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n{{\"a").encode()
    socks = _connect_many([(f"127.0.{2 + k // 250}.{2 + k % 250}", 1) for k in range(n)], port, head, 5.0)
    return _held(socks, "uploads stalled")


ATTACK_FNS = {"header flood": _header_flood, "half-open flood": _half_open_flood, "upload stalls": _upload_stalls}


class _Legit:
    """A legitimate client of ``app``: one kept-alive connection, opened (and used once) before the
    attack starts, as a participant already on the page; plus a request on a fresh connection every
    0.25 s, as one arriving during the attack. ``run(seconds)`` sends sequential requests (every
    25 ms at most); latencies in seconds."""

    def __init__(self, app: _App, port: int, base: str):
        self.app, self.base = app, base
        self.items = iter(app.session(base) + app.session(base)) if app.kind == "annotation" else None
        self.client = httpx.Client(base_url=base, timeout=httpx.Timeout(10.0))
        self._send(self.client)

    def _send(self, client) -> bool:
        try:
            if self.app.kind == "scoring":
                r = client.post("/score", content=self.app.body, headers={"content-type": "application/json"})
            else:
                url, payload = next(self.items)
                r = client.post(url, json=payload)
            return r.status_code in (200, 201)
        except (httpx.HTTPError, StopIteration):
            return False

    def run(self, seconds: float) -> dict:
        kept, fresh, fails, fresh_ok, fresh_n = [], [], 0, 0, 0
        t_end = time.perf_counter() + seconds
        next_fresh = time.perf_counter()
        try:
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                if self._send(self.client):
                    kept.append(time.perf_counter() - t0)
                else:
                    fails += 1
                if time.perf_counter() >= next_fresh:
                    next_fresh += 0.25
                    fresh_n += 1
                    t1 = time.perf_counter()
                    with httpx.Client(base_url=self.base, timeout=httpx.Timeout(10.0)) as one:
                        if self._send(one):
                            fresh_ok += 1
                            fresh.append(time.perf_counter() - t1)
                time.sleep(max(0.0, 0.025 - (time.perf_counter() - t0)))
        finally:
            self.client.close()
        return {"kept": kept, "fresh": fresh, "fails": fails, "fresh_ok": fresh_ok, "fresh_n": fresh_n}


def bench_no_proxy(tmp: Path, args) -> list[dict]:
    """Per app: every server started at once (each on its own copy of the database), throughput in
    ``args.rounds`` interleaved rounds (order reversed every other round, so the machine's load
    drifts alike over all servers; the median is kept), then the attacks, one server at a time."""
    import asyncio
    import shutil
    print("\n== with no proxy in front: servers compared (one worker each)")
    have = _raise_nofile(4096)
    if have < 2300:
        print(f"(open-file limit {have}: the half-open flood is cut to fit)")
    names = [n for n in args.servers if _available(n) or print(f"{n}: not installed, skipped")]
    rows = []
    for kind in ("scoring", "annotation"):
        app = _App(kind, tmp)
        procs = {}
        try:
            for name in names:
                db = tmp / f"np_{kind}_{name}.sqlite"
                if kind == "annotation":
                    shutil.copy(app.db.removeprefix("sqlite:///"), db)
                argv = [f"sqlite:///{db}" if a == app.db_arg else a for a in app.argv]
                procs[name] = _start(name, argv, app.probe)
            n_req = 20 if kind == "scoring" else 40
            rates = {name: [] for name in names}
            for r in range(args.rounds):
                for name in (names if r % 2 == 0 else names[::-1]):
                    proc, port = procs[name]
                    cpu0 = _cpu_seconds(proc.pid)
                    done, wall = asyncio.run(_throughput(app, port, 16, n_req))
                    rates[name].append((done / wall, 1000 * (_cpu_seconds(proc.pid) - cpu0) / max(done, 1)))
            for name in names:
                rows.append({"server": name, "app": kind, "attack": "throughput",
                             "rate": statistics.median(r for r, _ in rates[name]),
                             "cpu_ms": statistics.median(c for _, c in rates[name])})
                print(f"  {name:<18} {kind:<10} throughput {', '.join(f'{r:.0f}/s' for r, _ in rates[name])}; "
                      f"CPU {', '.join(f'{c:.1f}' for _, c in rates[name])} ms/request", flush=True)
            for name in names:
                proc, port = procs[name]
                base = f"http://127.0.0.1:{port}"
                for attack in ATTACKS:
                    client = _Legit(app, port, base)
                    sampler = RssSampler(proc.pid)
                    sampler.start()
                    end = ATTACK_FNS[attack](port, app, base) if attack != "none" else None
                    time.sleep(0.5)
                    legit = client.run(args.attack_seconds)
                    detail = end() if end else ""
                    sampler.stop.set()
                    sampler.join()
                    rows.append({"server": name, "app": kind, "attack": attack, **legit, "rss": sampler.peak,
                                 "detail": detail, "alive": proc.poll() is None})
                    print(f"  {name:<18} {kind:<10} {attack:<16} {_cell(rows[-1])}  {detail}", flush=True)
                    time.sleep(1.0)  # let the server drop what the attack left
                stop_server(proc)
        finally:
            for proc, _ in procs.values():
                stop_server(proc)
    print_no_proxy_table(rows)
    return rows


def _ms(values, q) -> str:
    return f"{1000 * pct(values, q):.0f}" if values else "–"


def _cell(row) -> str:
    kept = f"{_ms(row['kept'], 50)} / {_ms(row['kept'], 99)} ms"
    if row["fails"]:
        kept += f" ({row['fails']} failed)"
    return f"{kept}; fresh {row['fresh_ok']}/{row['fresh_n']}"


def print_no_proxy_table(rows: list[dict]) -> None:
    servers = list(dict.fromkeys(r["server"] for r in rows))
    find = {(r["server"], r["app"], r["attack"]): r for r in rows}
    print("\nThroughput, 16 keep-alive clients (one worker; median of the interleaved rounds; server CPU per "
          "request):\n")
    print("| server | `/score` (125 pairs) | clicks |")
    print("|---|---|---|")
    for s in servers:
        cells = []
        for kind in ("scoring", "annotation"):
            r = find.get((s, kind, "throughput"))
            cells.append(f"{r['rate']:.0f}/s, {r['cpu_ms']:.1f} ms CPU" if r else "–")
        print(f"| {SERVER_LABELS[s]} | {cells[0]} | {cells[1]} |")
    print("\nLegitimate latency p50 / p99 on a kept-alive connection (failed requests), fresh connections "
          "served, peak server RSS:\n")
    print("| server | attack | `/score` | fresh | RSS | click | fresh | RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for s in servers:
        for attack in ATTACKS:
            cells = []
            for kind in ("scoring", "annotation"):
                r = find.get((s, kind, attack))
                if r is None:
                    cells += ["–"] * 3
                    continue
                lat = f"{_ms(r['kept'], 50)} / {_ms(r['kept'], 99)} ms" + (f" ({r['fails']} failed)" if r["fails"] else "")
                if not r["alive"]:
                    lat += " (server died)"
                cells += [lat, f"{r['fresh_ok']}/{r['fresh_n']}", f"{r['rss'] / 2**20:.0f} MiB"]
            print(f"| {SERVER_LABELS[s] if attack == 'none' else ''} | {attack} | " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--format", choices=["npz", "json", "json.gz"], default="npz")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-concurrent", type=int, default=2, help="scoring slots per worker")
    parser.add_argument("--burst", type=int, default=300)
    parser.add_argument("--burst-concurrency", type=int, default=16)
    parser.add_argument("--db", default=None, help="leaderboard URL (default: a temporary SQLite file)")
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--skip-burst", action="store_true")
    parser.add_argument("--skip-hostile", action="store_true")
    parser.add_argument("--skip-no-proxy", action="store_true")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=SERVERS,
                        help="servers compared with no proxy in front (bounded: the one psc6k runs)")
    parser.add_argument("--attack-seconds", type=float, default=3.0, help="legitimate traffic measured per attack")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds per server")
    parser.add_argument("--serve-variant", choices=SERVERS[1:], help=argparse.SUPPRESS)
    parser.add_argument("command", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_variant:  # internal: run 'psc6k <command>' with another server (section 4)
        return run_variant(args.serve_variant, args.command)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="psc6k-bench-server-") as tmp:
        if not args.skip_full:
            bench_full(Path(tmp), args)
        if not args.skip_burst:
            bench_burst(Path(tmp), args)
        if not args.skip_hostile:
            bench_hostile(Path(tmp), args)
        if not args.skip_no_proxy:
            bench_no_proxy(Path(tmp), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
