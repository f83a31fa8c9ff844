"""Train PSCNet: 'encoder' (MoCo v2 on photo-sketch pairs) or 'estimator' (the warp estimator).

Examples::

    psc6k train encoder --images Sketchy --train-pairs PSC6K/train_pairs_ps.csv --out runs/enc
    psc6k train estimator --images Sketchy --train-pairs PSC6K/train_pairs_ps.csv \\
        --init runs/enc/checkpoint_last.pth.tar --val-annotations PSC6K/test_pairs_ps.csv --out runs/est
    torchrun --nproc_per_node 8 -m psc6k.cli train estimator ...   # several GPUs (DDP)

Every run writes checkpoint_last.pth.tar (resume with --resume), metrics.jsonl, train_log.csv,
eval_log.csv and learning_curve.png into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HELP = "train PSCNet: encoder (MoCo v2) or estimator (needs psc6k[model])"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=["encoder", "estimator"], help="what to train")
    parser.add_argument("--images", "-i", required=True, help="Sketchy root (the CSV paths are relative to it)")
    parser.add_argument("--train-pairs", required=True, help="train_pairs_ps.csv (or train_pairs_st.csv)")
    parser.add_argument("--out", "-o", required=True, help="run directory (checkpoints, metrics, plots)")
    parser.add_argument("--val-annotations", default=None,
                        help="held-out test_pairs_ps.csv scored by PCK after every --eval-every epochs")
    parser.add_argument("--val-pairs", type=int, default=200, help="score only the first N held-out pairs (0: all)")
    parser.add_argument("--init", default=None, help="start from these weights (e.g. the encoder run's checkpoint)")
    parser.add_argument("--resume", default=None, help="continue a run from its checkpoint (weights, optimizer, epoch)")
    parser.add_argument("--arch", default=None, choices=["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"],
                        help="encoder architecture for a new model (default resnet18)")
    parser.add_argument("--model-json", default=None,
                        help='other PSCNetConfig fields as JSON, e.g. \'{"width": 16, "moco_queue": 1024}\'')
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="stop after this many minutes of training (then evaluate and save)")
    parser.add_argument("--batch-size", "-b", type=int, default=32, help="per process")
    parser.add_argument("--lr", type=float, default=None, help="base learning rate (default 0.03 encoder, 0.003 estimator)")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup-epochs", type=float, default=0.0)
    parser.add_argument("--tau", type=float, default=0.001, help="softmax temperature of the similarity loss")
    parser.add_argument("--lambda-sim", type=float, default=0.1, help="weight of the perceptual similarity loss")
    parser.add_argument("--lambda-con", type=float, default=1.0, help="weight of the forward-backward consistency loss")
    parser.add_argument("--lambda-syn", type=float, default=0.0,
                        help="weight of the optional synthetic-warp regression loss (0 = off, as in the paper)")
    parser.add_argument("--freeze-encoder", action="store_true", help="estimator: do not update the encoder")
    parser.add_argument("--warp-strength", type=float, default=1.0, help="scale of the random affine+TPS warps")
    parser.add_argument("--image-size", type=int, default=256, help="images are resized to this side")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    parser.add_argument("--workers", type=int, default=2, help="image decoding worker processes")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=1, help="epochs between held-out evaluations")
    parser.add_argument("--save-every", type=int, default=1, help="epochs between checkpoints")
    parser.add_argument("--log-every", type=int, default=10, help="steps between metric records")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the final metrics as JSON")


def run(args: argparse.Namespace) -> int:
    import torch

    from model_zoo.train import TrainConfig, train
    from psc6k.errors import Psc6kError

    if args.threads:
        torch.set_num_threads(args.threads)
    model: dict = {}
    if args.model_json:
        try:
            model = json.loads(args.model_json)
        except json.JSONDecodeError as exc:
            raise Psc6kError(f"--model-json is not valid JSON: {exc}") from None
        if not isinstance(model, dict):
            raise Psc6kError("--model-json must be a JSON object")
    if args.arch:
        model["arch"] = args.arch
    cfg = TrainConfig(
        task=args.task, images=args.images, train_pairs=args.train_pairs, out_dir=args.out,
        val_annotations=args.val_annotations, val_pairs=args.val_pairs, model=model, init=args.init,
        resume=args.resume, epochs=args.epochs, max_steps=args.max_steps,
        time_limit=args.time_limit * 60 if args.time_limit else None, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, tau=args.tau,
        lambda_sim=args.lambda_sim, lambda_con=args.lambda_con, lambda_syn=args.lambda_syn,
        freeze_encoder=args.freeze_encoder, image_size=args.image_size, amp=not args.no_amp, device=args.device,
        workers=args.workers, seed=args.seed, eval_every=args.eval_every, save_every=args.save_every,
        log_every=args.log_every, progress=not args.no_progress, warp_strength=args.warp_strength,
    )
    result = train(cfg)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"done: {result['step']} steps; checkpoint {result['checkpoint']}"
              + (f"; held-out pck@0.10 {result['pck@0.10']:.2f}%" if "pck@0.10" in result else ""), file=sys.stderr)
    return 0
