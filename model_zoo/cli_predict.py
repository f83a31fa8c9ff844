"""Predict a flow submission with PSCNet from a checkpoint (released or trained with psc6k train).

Example::

    psc6k predict --checkpoint psc_resnet18.pth.tar --annotations PSC6K/test_pairs_ps.csv \\
        --images Sketchy --out pscnet18.npz
    psc6k eval pscnet18.npz --annotations PSC6K/test_pairs_ps.csv
"""

from __future__ import annotations

import argparse
import json
import sys
import time

HELP = "predict a flow submission with PSCNet (needs psc6k[model])"
SECTION, ORDER = "methods", 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", "-c", required=True,
                        help="PSCNet checkpoint: psc_resnet18.pth.tar / psc_resnet101.pth.tar or one from psc6k train")
    parser.add_argument("--annotations", "-a", required=True,
                        help="pairs to predict: test_pairs_ps.csv or test_pairs_st.csv")
    parser.add_argument("--images", "-i", required=True, help="Sketchy root (the CSV paths are relative to it)")
    parser.add_argument("--out", "-o", required=True, help="submission file to write (.npz, .json or .json.gz)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available)")
    parser.add_argument("--batch-size", "-b", type=int, default=16, help="pairs per forward pass")
    parser.add_argument("--workers", type=int, default=2, help="image decoding worker processes (0: in-process)")
    parser.add_argument("--no-amp", action="store_true", help="full float32 on CUDA (AMP float16 is the default there)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--method", default=None, help="method name stored in the submission (default: PSCNet-<arch>)")
    parser.add_argument("--image-size", type=int, default=256, help="images are resized to this side first")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow checkpoints that pickle Python objects (only for files you trust)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print a JSON summary (out path, pairs, seconds)")


def run(args: argparse.Namespace) -> int:
    import torch

    from model_zoo.checkpoint import load_checkpoint
    from model_zoo.predict import predict_submission, resolve_device
    from psc6k.errors import Psc6kError
    from psc6k.formats import read_annotations
    from psc6k.submission import save_submission

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.workers < 0:
        raise Psc6kError("--workers must be >= 0")
    device = resolve_device(args.device)  # fail early: before reading anything big
    out = str(args.out)
    if not out.lower().endswith((".npz", ".json", ".json.gz")):
        raise Psc6kError(f"--out {out!r}: use a .npz, .json or .json.gz file name")
    ann = read_annotations(args.annotations)
    model = load_checkpoint(args.checkpoint, map_location="cpu", trusted=args.trust_checkpoint)
    method = args.method or f"PSCNet-{model.config.arch}"
    start = time.perf_counter()
    sub = predict_submission(model, ann.photo, ann.sketch, args.images, device=device, batch_size=args.batch_size,
                             amp=not args.no_amp, num_workers=args.workers, image_size=args.image_size,
                             method=method, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    path = save_submission(sub, out)
    summary = {"out": str(path), "method": method, "pairs": len(sub), "device": str(device),
               "seconds": round(seconds, 3), "ms_per_pair": round(1000 * seconds / max(len(sub), 1), 2)}
    if args.json:
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"wrote {summary['pairs']} pairs to {summary['out']} ({summary['ms_per_pair']} ms/pair on {device});"
              f" score it with: psc6k eval {summary['out']} --annotations {args.annotations}", file=sys.stderr)
    return 0
