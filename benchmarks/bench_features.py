"""``psc6k predict --features pscnet`` against ``psc6k predict --checkpoint`` on the bundled sample.

Both runs use the same ResNet-18 checkpoint in the released layout (random values, built from
``model_zoo/reference/pscnet_resnet18_state_dict.tsv`` as the tests do), the same 40 pairs,
CPU, 2 threads, 0 loader workers, batch 16. Prints wall-clock seconds and ms/pair side by side:
the reference is PSCNet's own warp estimator, ``--features pscnet`` replaces the estimator by
cosine nearest-neighbour matching of the same encoder's layer2+layer3 features
(plus one run each with ``--mutual`` / ``--soft-argmax`` / ``--match-size 64``).

Usage: python benchmarks/bench_features.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from psc6k.data import sample_path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant; the best is reported")
    args = parser.parse_args()

    import torch

    from model_zoo.testing import REFERENCE_DIR, random_released_state_dict, read_state_dict_tsv
    sample = sample_path()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "psc_resnet18.pth.tar"
        rows = read_state_dict_tsv(REFERENCE_DIR / "pscnet_resnet18_state_dict.tsv")
        torch.save({"state_dict": random_released_state_dict(rows, distinct_bn=False)}, ckpt)
        base = [sys.executable, "-m", "psc6k", "predict", "--checkpoint", str(ckpt), "-a",
                str(sample / "test_pairs_ps.csv"), "-i", str(sample), "--device", "cpu", "--workers", "0",
                "--threads", str(args.threads), "--no-progress", "--json", "-b", "16"]
        variants = {
            "PSCNet estimator (--checkpoint)": [],
            "--features pscnet": ["--features", "pscnet"],
            "--features pscnet --mutual": ["--features", "pscnet", "--mutual"],
            "--features pscnet --soft-argmax": ["--features", "pscnet", "--soft-argmax"],
            "--features pscnet --match-size 64": ["--features", "pscnet", "--match-size", "64"],
        }
        results = {}
        for name, extra in variants.items():
            best = None
            for r in range(args.repeats):
                out = Path(tmp) / f"out{r}.npz"
                proc = subprocess.run(base + extra + ["-o", str(out)], capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"{name}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
                summary = json.loads(proc.stdout)
                if best is None or summary["seconds"] < best["seconds"]:
                    best = summary
            results[name] = best
    ref = results["PSCNet estimator (--checkpoint)"]["seconds"]
    print(f"{'variant':<36} {'pairs':>5} {'seconds':>8} {'ms/pair':>8} {'x reference':>11}")
    for name, s in results.items():
        print(f"{name:<36} {s['pairs']:>5} {s['seconds']:>8.2f} {s['ms_per_pair']:>8.1f} {s['seconds'] / ref:>11.2f}")


if __name__ == "__main__":
    main()
