"""The PSCNet model zoo as metadata (no torch import: the evaluation server reads this).

``MODELS[name]`` describes one released model: architecture, checkpoint file name, the
paper's PCK (percent; SPEC §1), and where the weights come from. The weights themselves are
not bundled; users download them from the authors' release and pass the file to
``psc6k predict --checkpoint``.
"""

from __future__ import annotations

__all__ = ["MODELS", "get_model_info"]

_COMMON = {
    "family": "PSCNet",
    "paper": "Lu, Wang & Fan, Learning Dense Correspondences between Photos and Sketches, ICML 2023",
    "source": "https://github.com/cogtoolslab/photo-sketch-correspondence",
    "input_size": 256,
    "flow_size": 16,
    "corr_layers": [2, 3],
    "conditions": {"photo": 0, "sketch": 1},
    "moco": {"dim": 128, "queue": 8192, "momentum": 0.999, "temperature": 0.07},
    "state_dict_layout": "released (encoder_q.*, encoder_k.*, framework.*, stn.*, pos_map)",
}

MODELS: dict[str, dict] = {
    "pscnet_resnet18": {
        **_COMMON,
        "arch": "resnet18",
        "checkpoint": "psc_resnet18.pth.tar",
        "state_dict_reference": "reference/pscnet_resnet18_state_dict.tsv",
        "paper_pck": {"pck@0.05": 56.38, "pck@0.10": 83.22},
        "cpu_ms_per_pair_reference": 73.0,  # released implementation, batch 1, 2 threads (issue 8)
    },
    "pscnet_resnet101": {
        **_COMMON,
        "arch": "resnet101",
        "checkpoint": "psc_resnet101.pth.tar",
        "state_dict_reference": "reference/pscnet_resnet101_state_dict.tsv",
        "paper_pck": {"pck@0.05": 58.00, "pck@0.10": 84.93},
    },
}


def get_model_info(name: str) -> dict:
    """Metadata of a zoo model; ``KeyError`` lists the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {sorted(MODELS)}") from None
