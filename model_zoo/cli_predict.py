"""Predict a flow submission with PSCNet from a checkpoint (released or trained with psc6k train),
or zero-shot from any dense feature extractor with --features (nearest-neighbour matching).

Example::

    psc6k predict --checkpoint psc_resnet18.pth.tar --annotations PSC6K/test_pairs_ps.csv \\
        --images Sketchy --out pscnet18.npz
    psc6k predict --features timm:vit_base_patch14_dinov2 --weights dinov2_vitb14.pth \\
        --annotations PSC6K/test_pairs_ps.csv --images Sketchy --out dinov2.npz
    psc6k predict --features mypkg.dift:extract ...     # any callable(images, domain) -> [N, C, h, w]
    psc6k eval pscnet18.npz --annotations PSC6K/test_pairs_ps.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from psc6k.errors import Psc6kError
from psc6k.formats import read_annotations
from psc6k.submission import save_submission

HELP = "predict a flow submission with PSCNet, or zero-shot from any feature extractor with --features (needs psc6k[model])"
SECTION, ORDER = "methods", 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", "-c", default=None,
                        help="PSCNet checkpoint: psc_resnet18.pth.tar / psc_resnet101.pth.tar or one from psc6k train "
                             "(required unless --features is a callable or timm:...)")
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
    feats = parser.add_argument_group("zero-shot feature matching (docs/beyond.md)")
    feats.add_argument("--features", default=None, metavar="SPEC",
                       help="MODULE:CALLABLE (or file.py:CALLABLE) taking (images [N,3,H,W] in [0,1], domain "
                            "'photo'|'sketch') and returning features [N,C,h,w]; 'pscnet' (the encoder of "
                            "--checkpoint); or timm:MODEL_NAME with --weights")
    feats.add_argument("--weights", default=None, help="local weights file for timm:MODEL_NAME (.pth / .safetensors)")
    feats.add_argument("--layer", type=int, default=-1, help="timm: which block's output (forward_intermediates index)")
    feats.add_argument("--input-size", type=int, default=None,
                       help="timm: resize images to this side first (rounded to the patch size; default: --image-size)")
    feats.add_argument("--match-size", type=int, default=None,
                       help="match on an N x N grid (features upsampled) instead of the feature resolution")
    feats.add_argument("--mutual", action="store_true", help="mutual nearest-neighbour check (others filled from the nearest kept match)")
    feats.add_argument("--soft-argmax", action="store_true", help="windowed soft-argmax instead of the arg max")
    feats.add_argument("--temperature", type=float, default=0.05, help="soft-argmax temperature on cosine similarity")
    feats.add_argument("--window", type=int, default=2, help="soft-argmax half-window, in target cells")


def run(args: argparse.Namespace) -> int:
    import torch

    from model_zoo.checkpoint import load_checkpoint
    from model_zoo.predict import predict_submission, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.workers < 0:
        raise Psc6kError("--workers must be >= 0")
    device = resolve_device(args.device)  # fail early: before reading anything big
    out = str(args.out)
    if not out.lower().endswith((".npz", ".json", ".json.gz")):
        raise Psc6kError(f"--out {out!r}: use a .npz, .json or .json.gz file name")
    ann = read_annotations(args.annotations)
    if args.features is not None:
        return _run_features(args, ann, device, out)
    if args.checkpoint is None:
        raise Psc6kError("give --checkpoint (PSCNet) or --features SPEC")
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
    _print_summary(args, summary)
    return 0


def _run_features(args, ann, device, out) -> int:
    from model_zoo.features import MatchOptions, load_extractor, predict_features_submission

    extractor = load_extractor(args.features, checkpoint=args.checkpoint, weights=args.weights,
                               trusted=args.trust_checkpoint, layer=args.layer, input_size=args.input_size)
    options = MatchOptions(size=args.match_size, mutual=args.mutual, soft_argmax=args.soft_argmax,
                           temperature=args.temperature, window=args.window).check()
    method = args.method or f"features:{args.features}"
    start = time.perf_counter()
    sub = predict_features_submission(extractor, ann.photo, ann.sketch, args.images, spec=args.features, device=device,
                                      batch_size=args.batch_size, num_workers=args.workers,
                                      image_size=args.image_size, options=options, method=method,
                                      progress=not args.no_progress)
    seconds = time.perf_counter() - start
    path = save_submission(sub, out)
    summary = {"out": str(path), "method": method, "pairs": len(sub), "device": str(device),
               "flow_size": list(sub.sketch_to_photo.shape[1:3]), "matching": dataclasses.asdict(options),
               "seconds": round(seconds, 3), "ms_per_pair": round(1000 * seconds / max(len(sub), 1), 2)}
    _print_summary(args, summary)
    return 0


def _print_summary(args, summary) -> None:
    if args.json:
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"wrote {summary['pairs']} pairs to {summary['out']} ({summary['ms_per_pair']} ms/pair on {summary['device']});"
              f" score it with: psc6k eval {summary['out']} --annotations {args.annotations}", file=sys.stderr)
