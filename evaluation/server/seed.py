"""Everything published on PSC6K, each number with its source and the protocol it was measured on
(SPEC §7), seeded into every public leaderboard with the badge "reported".

Three groups, never ranked together:

- **PSC6K protocol, main table** (``view="main"``, ``protocol="psc6k-test"``): the PSC6K paper's
  comparison (SPEC §7, "Tables 1 and 4"), transfer and retrain settings. Ranked beside the
  entries this server scores only when the server holds the full PSC6K test set.
- **Ablations** (``view="ablation"``): the paper's Tables 2, 3 and 5 (ResNet-18). Same protocol,
  but variants of one method: a separate view, never in the ranking.
- **SketchFusion Table 4** (``protocol="sketchfusion-split"``): its released code trains on the
  first 30 pairs of each category of the PSC6K test CSV and evaluates on the next 20; the table
  does not say so. A different split: shown apart, never ranked with PSC6K-protocol numbers.
  (Its rows for WeakAlign and WarpC are quoted from the PSC6K paper and are listed there.)

Only overall PCK@0.05 / PCK@0.10 are published; no per-category or per-direction numbers, and
``scorer_version`` "paper" because this server did not score them. Seeds are keyed (``seed_key``)
so that a database seeded by an older version is updated in place.
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER_URL = "https://arxiv.org/abs/2307.12967"
SKETCHFUSION_URL = "https://arxiv.org/abs/2503.14129"
PAPER_SCORER_VERSION = "paper"

PSC6K_PAPER = "Lu, Wang & Fan, Learning Dense Correspondences between Photos and Sketches, ICML 2023"
SKETCHFUSION_PAPER = "SketchFusion, CVPR 2025"

#: Protocol id -> what a number on it means (split, threshold basis, resolution, averaging).
PROTOCOLS: dict[str, dict] = {
    "psc6k-test": {
        "name": "PSC6K test set",
        "split": "PSC6K test set: all 6,250 photo-sketch pairs (125 categories of the Sketchy test split)",
        "threshold_basis": "alpha x 256 px (image side), distance <= threshold",
        "resolution": "256 x 256; flows bilinearly upsampled (align_corners=True), keypoints rounded to pixels",
        "averaging": "mean over pairs x both directions x 8 keypoints",
    },
    "sketchfusion-split": {
        "name": "SketchFusion split (different split)",
        "split": ("pairs 31-50 of each category of the PSC6K test CSV (2,500 pairs); the first 30 per "
                  "category are used for training (SketchFusion's released code, "
                  "src/SD_CLIP/utils/utils_dataset.py; the paper's Table 4 does not say so)"),
        "threshold_basis": "PCK@0.05 / @0.10 as reported; the basis is not stated in the table",
        "resolution": "not stated",
        "averaging": "not stated",
    },
}


@dataclass(frozen=True)
class Published:
    """One published number with its citation."""

    key: str
    method: str
    encoder: str | None
    setting: str | None      # "transfer" | "retrain" (the board's Supervision column)
    signal: str | None       # training signal: "keypoints" | "pair" | ... (SPEC §7)
    pck05: float
    pck10: float
    paper: str
    url: str
    table: str
    row: str
    protocol: str = "psc6k-test"
    view: str = "main"       # "main" | "ablation"
    note: str = ""


def _t1(key, method, encoder, setting, signal, pck05, pck10, note=""):
    column = "transfer" if setting == "transfer" else "retrain"
    return Published(key, method, encoder, setting, signal, pck05, pck10, PSC6K_PAPER, PAPER_URL,
                     f"Tables 1 and 4, {column} column", f"{method} ({signal}{', ' + encoder if encoder else ''})",
                     note=note)


def _abl(key, method, table, row, pck05, pck10, note):
    return Published(key, method, "ResNet-18", "retrain", "pair", pck05, pck10, PSC6K_PAPER, PAPER_URL, table, row,
                     view="ablation", note=note)


def _sf(key, method, pck05, pck10, note):
    return Published(key, method, None, None, None, pck05, pck10, SKETCHFUSION_PAPER, SKETCHFUSION_URL, "Table 4",
                     method, protocol="sketchfusion-split", note=note)


PUBLISHED: tuple[Published, ...] = (
    # PSC6K paper, transfer (pre-trained weights, no retraining)
    _t1("paper:hpf", "HPF", None, "transfer", "keypoints", 50.55, 78.18, "pre-trained weights, no retraining"),
    _t1("paper:chm", "CHM", None, "transfer", "keypoints", 40.52, 69.91, "pre-trained weights, no retraining"),
    _t1("paper:pmd-keypoints", "PMD", None, "transfer", "keypoints", 28.62, 63.95, "pre-trained weights, no retraining"),
    _t1("paper:cats", "CATs", None, "transfer", "keypoints", 52.36, 81.80, "pre-trained weights, no retraining"),
    _t1("paper:cnngeo-transfer", "CNNGeo", "ResNet-101", "transfer", "pair", 27.59, 57.71,
        "pre-trained weights, no retraining"),
    _t1("paper:weakalign-transfer", "WeakAlign", "ResNet-101", "transfer", "pair", 35.65, 68.76,
        "pre-trained weights, no retraining"),
    _t1("paper:ncnet", "NC-Net", "ResNet-101", "transfer", "pair", 40.60, 63.50, "pre-trained weights, no retraining"),
    _t1("paper:dccnet", "DCCNet", "ResNet-101", "transfer", "pair", 42.43, 66.53, "pre-trained weights, no retraining"),
    _t1("paper:pmd-pair", "PMD", "VGG-16", "transfer", "pair", 35.77, 71.24, "pre-trained weights, no retraining"),
    _t1("paper:warpc-transfer", "WarpC-SemanticGLUNet", "VGG-16", "transfer", "pair", 48.79, 71.43,
        "pre-trained weights, no retraining"),
    # PSC6K paper, retrain (trained on Sketchy's train split)
    _t1("paper:cnngeo", "CNNGeo", "ResNet-101", "retrain", "pair", 19.19, 42.57, "retrained on PSC6K train pairs"),
    _t1("paper:weakalign", "WeakAlign", "ResNet-101", "retrain", "pair", 43.55, 78.60, "retrained on PSC6K train pairs"),
    _t1("paper:warpc-semanticglunet", "WarpC-SemanticGLUNet", "VGG-16", "retrain", "pair", 56.78, 79.70,
        "retrained on PSC6K train pairs"),
    _t1("paper:pscnet-r18", "PSCNet", "ResNet-18", "retrain", "pair", 56.38, 83.22,
        "self-supervised on PSC6K train pairs"),
    _t1("paper:pscnet-r101", "PSCNet", "ResNet-101", "retrain", "pair", 58.00, 84.93,
        "self-supervised on PSC6K train pairs"),
    # Ablations (ResNet-18)
    _abl("paper:ablation-imagenet-only", "PSCNet, ImageNet-only encoder", "Table 2 (encoder training)",
         "ImageNet only", 17.20, 48.92, "encoder ablation: no photo-sketch contrastive pre-training"),
    _abl("paper:ablation-cl-instance", "PSCNet, CL on individual image", "Table 2 (encoder training)",
         "CL on individual image", 44.24, 75.84, "encoder ablation: contrastive on single images"),
    _abl("paper:ablation-cl-class", "PSCNet, CL on image class", "Table 2 (encoder training)", "CL on image class",
         54.73, 81.78, "encoder ablation: contrastive on categories"),
    _abl("paper:ablation-cl-pair", "PSCNet, CL on image pair", "Table 2 (encoder training)", "CL on image pair",
         56.38, 83.22, "the complete model's encoder"),
    _abl("paper:ablation-no-sim", "PSCNet, no L_sim", "Table 3 (estimator)", "no L_sim", 17.46, 49.43,
         "estimator ablation"),
    _abl("paper:ablation-no-perceptual", "PSCNet, no perceptual L_sim", "Table 3 (estimator)", "no perceptual L_sim",
         49.31, 80.61, "estimator ablation"),
    _abl("paper:ablation-no-con", "PSCNet, no L_con", "Table 3 (estimator)", "no L_con", 52.25, 80.38,
         "estimator ablation"),
    _abl("paper:ablation-no-weight", "PSCNet, no weight function", "Table 3 (estimator)", "no weight function",
         54.11, 82.51, "estimator ablation"),
    _abl("paper:ablation-single-layer", "PSCNet, no multiple feature layers", "Table 3 (estimator)",
         "no multiple feature layers", 55.20, 83.28, "estimator ablation"),
    _abl("paper:ablation-no-cbn", "PSCNet, no conditional BN", "Table 3 (estimator)", "no conditional BN",
         55.84, 82.67, "estimator ablation"),
    _abl("paper:ablation-complete", "PSCNet, complete", "Table 3 (estimator)", "complete", 56.38, 83.22,
         "the complete model"),
    _abl("paper:heldout-10", "PSCNet, 10 categories held out", "Table 5 (held-out categories)", "N=10",
         56.05, 82.96, "mean over held-out splits (std 0.20 / 0.15)"),
    _abl("paper:heldout-20", "PSCNet, 20 categories held out", "Table 5 (held-out categories)", "N=20",
         55.88, 82.85, "mean over held-out splits (std 0.27 / 0.18)"),
    # SketchFusion, Table 4: a different split
    _sf("sketchfusion:sketchfusion", "SketchFusion", 70.31, 89.86, "trained on the first 30 test pairs per category"),
    _sf("sketchfusion:b-clip", "B-CLIP", 22.29, 30.41, "zero-shot CLIP features"),
    _sf("sketchfusion:b-dino", "B-DINO", 34.21, 48.59, "zero-shot DINO features"),
    _sf("sketchfusion:b-dinov2", "B-DINOv2", 39.91, 56.46, "zero-shot DINOv2 features"),
    _sf("sketchfusion:b-sd", "B-SD", 41.42, 58.71, "zero-shot Stable Diffusion features"),
    _sf("sketchfusion:b-sd-clip", "B-SD+CLIP", 44.90, 62.02, "zero-shot Stable Diffusion + CLIP features"),
    _sf("sketchfusion:b-finetuning", "B-Finetuning", 11.58, 17.69, "fine-tuned baseline"),
)


def seed_entries(split: str = "test") -> list[dict]:
    """Rows for :func:`evaluation.server.db.init_db`; the citation and protocol ride in ``scores``."""
    rows = []
    for p in PUBLISHED:
        n_pairs = 6250 if p.protocol == "psc6k-test" else 2500
        rows.append(dict(
            seed_key=p.key, method=p.method, encoder=p.encoder, supervision=p.setting, paper_url=p.url,
            description=p.note, source="paper", split=split if p.protocol == "psc6k-test" else p.protocol,
            scorer_version=PAPER_SCORER_VERSION, n_pairs=n_pairs, pck05=p.pck05, pck10=p.pck10, ranked=True,
            scores={"overall": {"pck@0.05": p.pck05, "pck@0.10": p.pck10}, "reported_in_paper": True,
                    "protocol_id": p.protocol, "view": p.view,
                    "citation": {"paper": p.paper, "url": p.url, "table": p.table, "row": p.row},
                    "training_signal": p.signal},
        ))
    return rows
