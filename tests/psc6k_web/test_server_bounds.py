"""The HTTP server of both web services bounds what it reads before the app runs (issue #20):
``psc6k serve`` and ``psc6k annotate serve`` run through the real runner (``psc6k_web.server``) on
127.0.0.1 with real sockets, with small limits so that each bound is reached quickly.

Linux routes all of 127.0.0.0/8 to loopback, so a second "client" binds 127.0.0.x as its source.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from annotation_app.testing import make_study_files
from evaluation.server.testdata import free_port, serve_in_thread
from psc6k.cli import main
from psc6k.formats import write_test_pairs_ps
from psc6k.testing import make_annotations

from tests.helpers import can_bind_loopback_aliases

HEAD_TIMEOUT_S = 4.0        # small, so a half-sent head is closed quickly; large enough for each test's steps
MAX_HEAD_KB = 16
PER_CLIENT, MAX_CONNECTIONS = 3, 5
FLAGS = ["--max-head-kb", str(MAX_HEAD_KB), "--head-timeout", str(HEAD_TIMEOUT_S),
         "--max-connections", str(MAX_CONNECTIONS), "--max-connections-per-client", str(PER_CLIENT)]
GET = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n"


needs_aliases = pytest.mark.skipif(not can_bind_loopback_aliases(), reason="needs 127.0.0.x source addresses")


def _wait_up(proc: subprocess.Popen, port: int, path: str) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited:\n{proc.stdout.read().decode(errors='replace')}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not start in 60 s")


def _scoring_cmd(root: Path, port: int) -> tuple[list[str], str]:
    csv = root / "test_pairs_ps.csv"
    write_test_pairs_ps(make_annotations(), csv)
    return ["serve", "--annotations", str(csv), "--db", f"sqlite:///{root / 'lb.sqlite'}", "--no-seed",
            "--log-level", "warning"], "/health"


def _annotation_cmd(root: Path, port: int) -> tuple[list[str], str]:
    files = make_study_files(root / "files")
    db = f"sqlite:///{root / 'study.db'}"
    assert main(["annotate", "init", "--pairs", str(files["pairs"]), "--keypoints", str(files["keypoints"]),
                 "--images", str(files["images"]), "--db", db]) == 0
    return ["annotate", "serve", "--db", db, "--log-level", "warning", "--entry-rate-limit", "1/minute"], "/api/study"


@pytest.fixture(scope="module", params=["scoring", "annotation"])
def server(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"bounds_{request.param}")
    port = free_port()
    args, probe = (_scoring_cmd if request.param == "scoring" else _annotation_cmd)(root, port)
    proc = subprocess.Popen([sys.executable, "-m", "psc6k", *args, "--port", str(port), *FLAGS],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_up(proc, port, probe)
        yield {"app": request.param, "port": port, "pid": proc.pid, "probe": probe.encode()}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.settimeout(3 * HEAD_TIMEOUT_S)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def _status(sock: socket.socket) -> int | None:
    """The status of the server's reply on ``sock``, None when it closed (or reset) without one."""
    try:
        line = sock.recv(4096).split(b"\r\n", 1)[0]
    except ConnectionResetError:
        return None
    return int(line.split()[1]) if line else None


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_head_over_the_limit_is_refused_without_reading_the_rest(server):
    sent, size, chunk = 0, 32 * 2**20, b"a" * 2**18
    before = _rss(server["pid"])
    sock = _connect(server["port"])
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ")
        try:
            while sent < size:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        time.sleep(0.3)  # whatever the server buffered is in its RSS now; the connection is still ours
        grown = _rss(server["pid"]) - before
        assert sent < size, "the server read the whole 32 MiB header"
        assert grown < 8 * 2**20, f"server grew by {grown / 2**20:.1f} MiB"
        assert _status(sock) in (431, None)
    finally:
        sock.close()
    # a head just under the limit is still served
    with _connect(server["port"]) as ok:
        ok.sendall(b"GET " + server["probe"] + b" HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (MAX_HEAD_KB * 1024 - 200)
                   + b"\r\n\r\n")
        assert _status(ok) == 200


def test_a_half_sent_head_is_closed_after_the_head_timeout(server):
    with _connect(server["port"]) as sock:
        sock.sendall(b"GET " + server["probe"] + b" HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        try:
            status = _status(sock)   # blocks until the server answers or closes (or 3x the timeout: fails)
        except TimeoutError:
            pytest.fail("the half-sent head was still open after 3x the head timeout")
        assert status in (408, None)
        assert sock.recv(10) == b""  # closed


@needs_aliases
def test_the_connection_bounds_refuse_new_connections_and_keep_the_open_ones(server):
    port = server["port"]
    held = [_connect(port) for _ in range(PER_CLIENT)]
    try:
        time.sleep(0.2)  # all accepted
        with _connect(port) as extra:  # one more from the same address: refused at once
            assert _status(extra) in (503, None)
        others = [_connect(port, f"127.0.0.{k + 2}") for k in range(MAX_CONNECTIONS - PER_CLIENT)]
        try:
            time.sleep(0.2)
            with _connect(port, "127.0.0.9") as beyond:  # another address, but the worker is full
                assert _status(beyond) in (503, None)
            held[0].sendall(GET % server["probe"])  # an open connection is still served
            assert _status(held[0]) == 200
        finally:
            for s in others:
                s.close()
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    with _connect(port, "127.0.0.9") as again:  # the slots are free again once those are closed
        again.sendall(GET % server["probe"])
        assert _status(again) == 200


@pytest.mark.parametrize("server", ["annotation"], indirect=True)  # the entry rate limit is the annotation app's
def test_x_forwarded_for_does_not_choose_the_client_address(server):
    port, seen = server["port"], []
    for fake in ("10.0.0.1", "10.0.0.2"):
        r = httpx.post(f"http://127.0.0.1:{port}/api/sessions", json={"prolific_pid": f"P{fake}"},
                       headers={"X-Forwarded-For": fake}, timeout=10)
        seen.append(r.status_code)
    assert seen[1] == 429, seen  # one limit for the one TCP peer, whatever it claims


def test_the_runner_leaves_request_client_to_the_tcp_peer():
    """Direct check on the runner both commands use: the app sees the TCP peer, not a header."""
    async def echo(scope, receive, send):
        if scope["type"] != "http":
            return
        body = scope["client"][0].encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    with serve_in_thread(echo) as base:
        r = httpx.get(base + "/", headers={"X-Forwarded-For": "203.0.113.7", "X-Real-IP": "203.0.113.8",
                                           "Forwarded": "for=203.0.113.9"}, timeout=10)
    assert r.text == "127.0.0.1"


@pytest.mark.parametrize("command", [["serve"], ["annotate", "serve", "--db", "sqlite:///none.db"]])
@pytest.mark.parametrize("flag, value", [("--max-head-kb", "0"), ("--head-timeout", "-1"),
                                         ("--max-connections", "0"), ("--keep-alive", "0")])
def test_a_bad_limit_is_one_line_naming_its_flag(command, flag, value, capsys):
    assert main([*command, flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0], err
