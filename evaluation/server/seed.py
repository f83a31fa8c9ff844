"""The published PSC6K numbers (SPEC §1), seeded into every leaderboard as "reported in paper".

They carry only the overall PCK@0.05 / PCK@0.10 (the paper's Table 1); no per-category or
per-direction numbers, and ``scorer_version`` "paper" because this server did not score them.
"""

from __future__ import annotations

PAPER_URL = "https://arxiv.org/abs/2307.12967"
PAPER_SCORER_VERSION = "paper"

#: Encoders are given only where SPEC §1 states them (None = not stated).
#: (seed key, method, encoder, supervision, PCK@0.05 %, PCK@0.10 %, note)
PUBLISHED: tuple[tuple[str, str, str | None, str, float, float, str], ...] = (
    ("paper:pscnet-r18", "PSCNet", "ResNet-18", "retrain", 56.38, 83.22,
     "self-supervised on PSC6K train pairs"),
    ("paper:pscnet-r101", "PSCNet", "ResNet-101", "retrain", 58.00, 84.93,
     "self-supervised on PSC6K train pairs"),
    ("paper:warpc-semanticglunet", "WarpC-SemanticGLUNet", None, "retrain", 56.78, 79.70,
     "retrained on PSC6K train pairs"),
    ("paper:weakalign", "WeakAlign", None, "retrain", 43.55, 78.60, "retrained on PSC6K train pairs"),
    ("paper:cnngeo", "CNNGeo", None, "retrain", 19.19, 42.57, "retrained on PSC6K train pairs"),
    ("paper:cats", "CATs", None, "transfer", 52.36, 81.80, "pre-trained weights, no retraining"),
    ("paper:hpf", "HPF", None, "transfer", 50.55, 78.18, "pre-trained weights, no retraining"),
    ("paper:ablation-imagenet-only", "PSCNet, ImageNet-only encoder (ablation)", "ResNet-18", "retrain",
     17.20, 48.92, "encoder ablation: no photo-sketch contrastive pre-training"),
)


def seed_entries(split: str = "test") -> list[dict]:
    """Rows for :func:`evaluation.server.db.init_db`."""
    rows = []
    for key, method, encoder, supervision, pck05, pck10, note in PUBLISHED:
        rows.append(dict(
            seed_key=key, method=method, encoder=encoder, supervision=supervision, paper_url=PAPER_URL,
            description=note, source="paper", split=split, scorer_version=PAPER_SCORER_VERSION,
            n_pairs=6250, pck05=pck05, pck10=pck10, ranked=True,
            scores={"overall": {"pck@0.05": pck05, "pck@0.10": pck10}, "reported_in_paper": True},
        ))
    return rows
