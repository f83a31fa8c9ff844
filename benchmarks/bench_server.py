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

Usage: ``python benchmarks/bench_server.py [--concurrency 20] [--format npz|json.gz] [--workers 1]
[--skip-full] [--skip-burst] [--skip-hostile]``.
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
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server failed to start:\n{proc.stderr.read().decode()}")
        if time.time() > deadline:
            proc.kill()
            raise SystemExit("server did not start within 120 s")
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
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="psc6k-bench-server-") as tmp:
        if not args.skip_full:
            bench_full(Path(tmp), args)
        if not args.skip_burst:
            bench_burst(Path(tmp), args)
        if not args.skip_hostile:
            bench_hostile(Path(tmp), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
