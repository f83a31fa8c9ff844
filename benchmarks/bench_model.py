"""PSCNet ResNet-18 inference speed per photo-sketch pair (CPU, 2 threads by default).

Side by side in one run:

* ``released-style``: the released evaluation path (eval.py of the original code): encoder run
  through ``layer4`` and the pooled head for each image, float32, autograd enabled under
  ``no_grad``, batch 1. The released implementation itself is not vendored here; this is the
  same computation with our modules. The issue quotes ~73 ms/pair for it on this machine.
* ``psc6k``: ``PSCNet.predict_flows`` under ``inference_mode`` (encoder stops at ``layer3``, the
  last correlated stage), batch 1 and batch 16, optionally ``channels_last``.

With ``--gpu`` (and a CUDA device) it also reports pairs/s at batch 64 with AMP float16. That
part has NOT been verified in this repository's CI (no GPU was available when it was written).

Usage: python benchmarks/bench_model.py [--threads 2] [--repeats 5] [--gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from model_zoo.pscnet import PHOTO, SKETCH, PSCNet


def _time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    best = min(times)
    return best, sorted(times)[len(times) // 2]


def released_style(model: PSCNet, photo, sketch):
    """encoder_q through layer4 (+ pooled features) for both images, then the STN both ways."""
    with torch.no_grad():
        _, pf = model.encoder_q.pooled(model.normalize(photo), PHOTO)
        _, sf = model.encoder_q.pooled(model.normalize(sketch), SKETCH)
        return model.stn(pf, sf), model.stn(sf, pf)


def ours(model: PSCNet, photo, sketch):
    with torch.inference_mode():
        return model.predict_flows(photo, sketch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--gpu", action="store_true", help="also measure CUDA batch 64 with AMP (not verified here)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = PSCNet(arch="resnet18").eval()
    x1 = (torch.rand(1, 3, 256, 256), torch.rand(1, 3, 256, 256))
    xb = (torch.rand(args.batch, 3, 256, 256), torch.rand(args.batch, 3, 256, 256))

    # same numbers from both paths
    a, b = released_style(model, *x1), ours(model, *x1)
    assert torch.allclose(a[0], b[0], atol=1e-5) and torch.allclose(a[1], b[1], atol=1e-5)

    rows = []
    best, med = _time(lambda: released_style(model, *x1), args.repeats)
    rows.append(("released-style (layer4, no_grad)", 1, best * 1e3, med * 1e3))
    best, med = _time(lambda: ours(model, *x1), args.repeats)
    rows.append(("psc6k predict_flows", 1, best * 1e3, med * 1e3))
    best, med = _time(lambda: ours(model, *xb), max(2, args.repeats // 2))
    rows.append(("psc6k predict_flows", args.batch, best * 1e3 / args.batch, med * 1e3 / args.batch))
    cl = PSCNet(arch="resnet18").eval().to(memory_format=torch.channels_last)
    cl.load_state_dict(model.state_dict())
    xb_cl = tuple(t.contiguous(memory_format=torch.channels_last) for t in xb)
    ref, got = ours(model, *(t[:2] for t in xb)), ours(cl, *(t[:2] for t in xb_cl))
    assert torch.allclose(ref[0], got[0], atol=1e-5) and torch.allclose(ref[1], got[1], atol=1e-5)
    best, med = _time(lambda: ours(cl, *xb_cl), max(2, args.repeats // 2))
    rows.append(("psc6k predict_flows, channels_last (psc6k predict)", args.batch, best * 1e3 / args.batch, med * 1e3 / args.batch))

    gpu = None
    if args.gpu:
        if not torch.cuda.is_available():
            gpu = "no CUDA device"
        else:
            m = model.cuda()
            xg = (torch.rand(64, 3, 256, 256, device="cuda"), torch.rand(64, 3, 256, 256, device="cuda"))

            def run():
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
                    m.predict_flows(*xg)
                torch.cuda.synchronize()
            best, med = _time(run, 10, warmup=3)
            gpu = {"device": torch.cuda.get_device_name(), "batch": 64, "pairs_per_s": round(64 / med, 1)}

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if args.json:
        print(json.dumps({"threads": args.threads, "load_avg_1min": load,
                          "rows": [dict(zip(("impl", "batch", "best_ms_per_pair", "median_ms_per_pair"), r))
                                   for r in rows], "gpu": gpu}))
        return
    print(f"PSCNet ResNet-18, 256x256 pairs, CPU {args.threads} threads (1-min load average {load:.1f})")
    print(f"{'implementation':<52} {'batch':>5} {'best ms/pair':>13} {'median ms/pair':>15}")
    for impl, batch, best, med in rows:
        print(f"{impl:<52} {batch:>5} {best:>13.1f} {med:>15.1f}")
    print("(issue 8: the released implementation runs at ~73 ms/pair, batch 1, on this machine)")
    if gpu is not None:
        print(f"GPU (not verified in CI): {gpu}")


if __name__ == "__main__":
    main()
