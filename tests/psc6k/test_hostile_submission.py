"""Bounded cost of reading a submission: measured peak memory against the stated bound.

Bound (docs/submission.md, "Limits"): peak memory of ``load_submission`` <= the arrays the
submission declares — float64 for JSON, i.e. 2x their float32 size; the stored dtype for NPZ —
plus a fixed overhead. Hostile inputs (object bombs, gzip bombs, flows of a forbidden dtype or
size) are refused before they cost more than the fixed overhead. Each case runs in a fresh
process and reports the growth of its peak RSS (``VmHWM``) over the imports.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from psc6k.submission import Submission, save_submission

#: The fixed overhead allowed on top of the arrays (interpreter noise, parse scratch, one block).
FIXED_MB = 40

PROBE = r"""
import sys
import numpy as np, msgspec, psc6k.submission as S
from psc6k.errors import SubmissionError
def hwm():  # VmHWM is per address space, fresh after exec (ru_maxrss is inherited from the parent)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
base = hwm()
try:
    sub = S.load_submission(sys.argv[1], max_decompressed=int(sys.argv[2]))
    verdict = "ok"
except SubmissionError as exc:
    verdict = "refused: " + str(exc)[:200]
print(hwm() - base, verdict)
"""


def _growth(path, limit=1 << 30) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-c", PROBE, str(path), str(limit)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    grew, verdict = r.stdout.split(" ", 1)
    return int(grew), verdict.strip()


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """1,000 pairs of 32 x 32 flows: 16 MB of float32, 33 MB of float64 across both directions."""
    root = tmp_path_factory.mktemp("bounded")
    n, side = 1000, 32
    rng = np.random.default_rng(0)
    s2p = rng.uniform(-1, 1, (n, side, side, 2)).astype(np.float32)
    p2s = rng.uniform(-1, 1, (n, side, side, 2)).astype(np.float32)
    sub = Submission("m", "flow", [f"a/photo/b/cat/{i}.jpg" for i in range(n)],
                     [f"a/sketch/b/cat/{i}-1.png" for i in range(n)], s2p, p2s)
    float32_bytes = s2p.nbytes + p2s.nbytes
    return {"root": root, "sub": sub, "f32": float32_bytes,
            "json.gz": save_submission(sub, root / "big.json.gz"), "npz": save_submission(sub, root / "big.npz")}


@pytest.mark.parametrize("name", ["json.gz", "npz"])
def test_peak_memory_is_within_twice_the_float32_flows(big, name):
    grew, verdict = _growth(big[name])
    assert verdict == "ok"
    print(f"{name}: peak grew {grew / 2**20:.1f} MiB for {big['f32'] / 2**20:.1f} MiB of float32 flows")
    bound = 2 * big["f32"] + FIXED_MB * 2**20
    assert grew <= bound, f"{name}: grew {grew / 2**20:.0f} MiB > bound {bound / 2**20:.0f} MiB"


def test_hostile_inputs_cost_only_the_fixed_overhead(tmp_path):
    cases = {
        "object-bomb.json.gz": gzip.compress(b'{"psc6k_submission": 1, "kind": "flow", "junk": ['
                                             + b"[]," * 10_000_000 + b"[]]}"),
        "pair-bomb.json.gz": gzip.compress(b'{"psc6k_submission": 1, "kind": "flow", "pairs": [{"photo": "p", '
                                           b'"sketch": "s", "junk": [' + b"[]," * 10_000_000 + b"[]]}]}"),
        "gzip-bomb.json.gz": gzip.compress(b'{"method": "' + b"a[" * (40 * 2**20), 1),
        "one-long-row.json": b'{"psc6k_submission": 1, "kind": "flow", "pairs": [{"photo": "p", "sketch": "s", '
                             b'"sketch_to_photo": [[' + b"0," * 5_000_000 + b"0]]}]}",
    }
    buf = io.BytesIO()
    zeros = np.zeros((4, 2500, 2500, 2), np.uint8)
    np.savez_compressed(buf, photo=np.array([f"p{i}" for i in range(4)]), sketch=np.array([f"s{i}" for i in range(4)]),
                        sketch_to_photo=zeros, photo_to_sketch=zeros)
    cases["uint8-flows.npz"] = buf.getvalue()
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        grew, verdict = _growth(tmp_path / name, limit=64 * 2**20)
        assert verdict.startswith("refused"), (name, verdict)
        assert grew <= FIXED_MB * 2**20, f"{name}: grew {grew / 2**20:.0f} MiB ({verdict})"


def test_unknown_key_is_refused_before_its_value_is_read():
    """The reader stops at the key: the rest of the stream (here: invalid) is never parsed."""
    from psc6k.errors import SubmissionError
    from psc6k.submission import load_submission

    data = b'{"psc6k_submission": 1, "junk": ' + b"\x00" * 100
    with pytest.raises(SubmissionError, match="unknown key 'junk'"):
        load_submission(data)
    data = json.dumps({"psc6k_submission": 1, "kind": "flow", "pairs": [{"photo": "p", "sketch": "s", "x": 1}]})
    with pytest.raises(SubmissionError, match=r"pairs\[0\]: unknown key 'x'"):
        load_submission(data.encode())
