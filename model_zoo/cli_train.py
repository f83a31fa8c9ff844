"""Train PSCNet: 'encoder' (MoCo v2 on photo-sketch pairs) or 'estimator' (the warp estimator).

Examples::

    psc6k train encoder --images Sketchy --train-pairs PSC6K/train_pairs_ps.csv --out runs/enc
    psc6k train estimator --images Sketchy --train-pairs PSC6K/train_pairs_ps.csv \\
        --init runs/enc/checkpoint_last.pth.tar --val-annotations PSC6K/test_pairs_ps.csv --out runs/est
    psc6k train encoder --print-config          # the resolved recipe (authors' defaults), as JSON
    psc6k train encoder --init-encoder moco_imagenet_resnet18_reformat.pth.tar --max-steps 0 --out runs/init
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
SECTION, ORDER = "methods", 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("task", choices=["encoder", "estimator"], help="what to train")
    a("--print-config", action="store_true", help="print the resolved recipe as one JSON object and exit (no data needed)")
    a("--recipe", choices=["released", "paper"], default="released",
      help="released: what the authors' code does (default); paper: the paper's text (docs/model_zoo.md)")
    a("--images", "-i", default=None, help="Sketchy root (the CSV paths are relative to it)")
    a("--train-pairs", default=None, help="train_pairs_ps.csv (or train_pairs_st.csv)")
    a("--out", "-o", dest="out_dir", default=None, help="run directory (checkpoints, metrics, plots)")
    a("--val-annotations", default=None, help="held-out test_pairs_ps.csv: PCK every --pck-freq, k-NN every --knn-freq epochs")
    a("--val-pairs", type=int, default=200, help="score only the first N held-out pairs (0: all)")
    a("--init", default=None, help="start from these PSCNet weights (e.g. the encoder run's checkpoint)")
    a("--init-encoder", default=None,
      help="plain ResNet weights for the encoders: moco_imagenet_resnet*_reformat.pth.tar, a torchvision state dict,"
           " or a MoCo v2 checkpoint")
    a("--resume", default=None, help="continue a run from its checkpoint (weights, optimizer, epoch)")
    # architecture (the authors' names); default: the released model, or the --init checkpoint's
    a("--arch", default=None, choices=["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
    a("--layer", type=int, nargs="+", default=None, help="ResNet stages correlated (default 2 3; '--layer 3': Table 3)")
    a("--feat-size", type=int, default=None, help="feature map side for the correlation (16)")
    a("--stn-size", type=int, default=None, help="flow side (16)")
    a("--stn-layer", type=int, default=None, help="halving layers per STN block (5)")
    a("--moco-dim", type=int, default=None)
    a("--moco-k", type=int, default=None)
    a("--moco-m", type=float, default=None)
    a("--moco-t", type=float, default=None)
    a("--model-json", default=None, help='other PSCNetConfig fields as JSON, e.g. \'{"width": 16}\'')
    # optimisation (the authors' names and defaults)
    a("--epochs", type=int, default=1500, help="an epoch visits every training photo once, with one sampled sketch; "
      "--recipe released trains epochs + 1, as theirs")
    a("--warmup-epochs", type=int, default=100)
    a("--no-cos", action="store_false", dest="cos", help="no cosine decay after the warm-up")
    a("--batch-size", "-b", type=int, default=256, help="effective batch over all processes and micro-batches")
    a("--accumulate", type=int, default=1, help="split each batch into N micro-batches (same update, less memory)")
    a("--lr", type=float, default=None, help="base learning rate (default 0.03 encoder, 0.003 estimator)")
    a("--momentum", type=float, default=0.9)
    a("--weight-decay", "--wd", type=float, default=1e-4)
    a("--corr-t", type=float, default=0.001, help="softmax temperature of the similarity loss")
    a("--clr-loss-weight", type=float, default=1.0)
    a("--sim-loss-weight", type=float, default=0.1)
    a("--con-loss-weight", type=float, default=1.0)
    a("--syn-loss-weight", type=float, default=0.0, help="synthetic-warp regression ('no longer used' by the authors)")
    a("--trans-type", nargs="+", default=["affine", "tps", "afftps"], help="warp kinds, one drawn per sample")
    a("--supervision", choices=["pair", "class", "instance"], default="pair", help="contrastive positives (Table 2)")
    # ablations (Table 3)
    a("--no-freeze", action="store_false", dest="freeze", help="estimator: also train the encoder")
    a("--no-cbn", action="store_false", dest="cbn", help="one BatchNorm for both modalities")
    a("--no-weighted", action="store_false", dest="weighted", help="unweighted similarity loss")
    a("--no-perceptual", action="store_false", dest="perceptual", help="warp features instead of re-encoding images")
    a("--no-sim", action="store_true", help="no similarity loss (--sim-loss-weight 0)")
    a("--no-con", action="store_true", help="no consistency loss (--con-loss-weight 0)")
    a("--holdout-categories", type=int, default=0, help="leave N training categories out (Appendix C)")
    a("--holdout-seed", type=int, default=0)
    # monitoring and job
    a("--knn-freq", type=int, default=50, help="epochs between k-NN retrieval evaluations")
    a("--pck-freq", type=int, default=100, help="epochs between PCK evaluations")
    a("--save-freq", type=int, default=50, help="epochs between checkpoints")
    a("--max-steps", type=int, default=None, help="stop after this many optimizer steps (0: save the initial model)")
    a("--time-limit", type=float, default=None, help="stop after this many minutes of training (then evaluate and save)")
    a("--warp-strength", type=float, default=1.0, help="scale the authors' warp ranges")
    a("--jitter-p", type=float, default=1.0, help="colour-jitter probability (kornia default 1, as the authors)")
    a("--image-size", type=int, default=256, help="images are resized to this side")
    a("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    a("--no-amp", action="store_true", help="no mixed precision on CUDA")
    a("--workers", type=int, default=2, help="image decoding worker processes")
    a("--threads", type=int, default=None, help="CPU threads for torch")
    a("--seed", type=int, default=0)
    a("--log-every", type=int, default=10, help="optimizer steps between metric records")
    a("--no-progress", action="store_true")
    a("--json", action="store_true", help="print the final metrics as JSON")


def build_config(args: argparse.Namespace):
    """The :class:`model_zoo.train.TrainConfig` of parsed arguments."""
    from model_zoo.train import TrainConfig
    from psc6k.errors import Psc6kError

    model: dict = {}
    if args.model_json:
        try:
            model = json.loads(args.model_json)
        except json.JSONDecodeError as exc:
            raise Psc6kError(f"--model-json is not valid JSON: {exc}") from None
        if not isinstance(model, dict):
            raise Psc6kError("--model-json must be a JSON object")
    for option, field in (("arch", "arch"), ("layer", "corr_layers"), ("feat_size", "feat_size"),
                          ("stn_size", "flow_size"), ("stn_layer", "stn_layers"), ("moco_dim", "moco_dim"),
                          ("moco_k", "moco_queue"), ("moco_m", "moco_momentum"), ("moco_t", "moco_temperature")):
        value = getattr(args, option)
        if value is not None:
            model[field] = value
    return TrainConfig(
        task=args.task, recipe=args.recipe, images=args.images, train_pairs=args.train_pairs, out_dir=args.out_dir,
        val_annotations=args.val_annotations, val_pairs=args.val_pairs, model=model, init=args.init,
        init_encoder=args.init_encoder, resume=args.resume, epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        cos=args.cos, batch_size=args.batch_size, accumulate=args.accumulate, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, corr_t=args.corr_t, clr_loss_weight=args.clr_loss_weight,
        sim_loss_weight=0.0 if args.no_sim else args.sim_loss_weight,
        con_loss_weight=0.0 if args.no_con else args.con_loss_weight, syn_loss_weight=args.syn_loss_weight,
        trans_type=tuple(args.trans_type), supervision=args.supervision, freeze=args.freeze, cbn=args.cbn,
        weighted=args.weighted, perceptual=args.perceptual, holdout_categories=args.holdout_categories,
        holdout_seed=args.holdout_seed, knn_freq=args.knn_freq, pck_freq=args.pck_freq, save_freq=args.save_freq,
        max_steps=args.max_steps, time_limit=args.time_limit * 60 if args.time_limit else None,
        warp_strength=args.warp_strength, jitter_p=args.jitter_p, image_size=args.image_size, amp=not args.no_amp,
        device=args.device, workers=args.workers, seed=args.seed, log_every=args.log_every,
        progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from model_zoo.train import resolved_config, train

    cfg = build_config(args)
    if args.print_config:
        json.dump(resolved_config(cfg), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    result = train(cfg)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"done: {result['step']} steps; checkpoint {result['checkpoint']}"
              + (f"; held-out pck@0.10 {result['pck@0.10']:.2f}%" if "pck@0.10" in result else "")
              + (f"; k-NN sketch->photo {100 * result['knn_s2p']:.1f}%" if "knn_s2p" in result else ""),
              file=sys.stderr)
    return 0
