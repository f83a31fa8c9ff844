"""PSCNet state-dict layout and checkpoint loading against the released key lists (SPEC §6)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from model_zoo.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from model_zoo.pscnet import PHOTO, SKETCH, PSCNet  # noqa: E402
from model_zoo.testing import (REFERENCE_DIR, random_released_state_dict, read_state_dict_tsv,  # noqa: E402
                               tiny_model)

TSV18 = REFERENCE_DIR / "pscnet_resnet18_state_dict.tsv"
TSV101 = REFERENCE_DIR / "pscnet_resnet101_state_dict.tsv"


def _layout(model) -> list[tuple[str, tuple, str]]:
    return [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("arch,tsv", [("resnet18", TSV18), ("resnet101", TSV101)])
def test_state_dict_layout_is_the_released_one(arch, tsv):
    expected = read_state_dict_tsv(tsv)
    with torch.device("meta"):  # layout only: no memory, no init cost
        model = PSCNet(arch=arch)
    assert _layout(model) == expected  # names, order, shapes and dtypes


@pytest.fixture(scope="module")
def released18(tmp_path_factory):
    """A resnet18 checkpoint in the released layout (module. prefix, distinct BN copies)."""
    state = random_released_state_dict(read_state_dict_tsv(TSV18), seed=1)
    path = tmp_path_factory.mktemp("ckpt") / "psc_resnet18.pth.tar"
    torch.save({"epoch": 1500, "arch": "resnet18", "state_dict": state, "optimizer": {"state": {}, "param_groups": []}},
               path)
    return path, state


def test_released_layout_loads_strictly_and_bn_follows_condition(released18):
    path, state = released18
    model = load_checkpoint(path)
    assert model.config.arch == "resnet18" and not model.training
    loaded = model.state_dict()
    assert set(loaded) == {k[len("module."):] for k in state}
    for key in ("encoder_q.layer3.1.conv2.weight", "stn.net_8x.3.weight", "framework.queue", "pos_map",
                "encoder_q.bn1.norms.1.running_var"):
        assert torch.equal(loaded[key], state["module." + key]), key

    # which BatchNorm copy runs: hooks on both copies of the stem BN
    calls = []
    bn = model.encoder_q.bn1
    for i, norm in enumerate(bn.norms):
        norm.register_forward_hook(lambda mod, inp, out, i=i: calls.append(i))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        photo_feats = model.encode(x, PHOTO)
        assert calls == [0]
        sketch_feats = model.encode(x, SKETCH)
        assert calls == [0, 1]
    # and numerically: the stem BN in eval mode is (x - mean_c) / sqrt(var_c + eps) * w_c + b_c
    stem = model.encoder_q.conv1(model.normalize(x))
    for cond in (PHOTO, SKETCH):
        n = bn.norms[cond]
        ref = (stem - n.running_mean[None, :, None, None]) / torch.sqrt(n.running_var[None, :, None, None] + n.eps)
        ref = ref * n.weight[None, :, None, None] + n.bias[None, :, None, None]
        with torch.no_grad():
            torch.testing.assert_close(bn(stem, cond), ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(photo_feats["layer3"], sketch_feats["layer3"])


def test_identical_bn_copies_give_identical_outputs(tmp_path):
    """Released weights hold identical BN copies: photo and sketch conditions then agree."""
    state = random_released_state_dict(read_state_dict_tsv(TSV18), seed=2, distinct_bn=False, prefix="")
    path = tmp_path / "same_bn.pth.tar"
    torch.save({"state_dict": state}, path)
    model = load_checkpoint(path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x, PHOTO)["layer3"], model.encode(x, SKETCH)["layer3"])


def _save_tiny(tmp_path, mutate):
    model = tiny_model()
    state = {"module." + k: v.clone() for k, v in model.state_dict().items()}
    mutate(state)
    path = tmp_path / "bad.pth.tar"
    torch.save({"state_dict": state, "config": {"model": model.config.to_dict()}}, path)
    return path


def test_missing_key_is_named(tmp_path):
    path = _save_tiny(tmp_path, lambda s: s.pop("module.stn.net_8x.18.bias"))
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): stn\.net_8x\.18\.bias"):
        load_checkpoint(path)


def test_unexpected_key_is_named(tmp_path):
    path = _save_tiny(tmp_path, lambda s: s.update({"module.encoder_q.fc.weight": torch.zeros(3, 3)}))
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): encoder_q\.fc\.weight"):
        load_checkpoint(path)


def test_shape_mismatch_is_named(tmp_path):
    path = _save_tiny(tmp_path, lambda s: s.update({"module.stn.base_map": torch.zeros(1, 4, 4, 2)}))
    with pytest.raises(CheckpointError, match=r"stn\.base_map \(checkpoint \(1, 4, 4, 2\), model \(1, 8, 8, 2\)\)"):
        load_checkpoint(path)


def test_diverging_encoder_copies_are_refused(tmp_path):
    def mutate(s):
        s["module.framework.encoder_q.conv1.weight"] = s["module.encoder_q.conv1.weight"] + 1
    with pytest.raises(CheckpointError, match=r"encoder_q\.conv1\.weight and framework\.encoder_q\.conv1\.weight"):
        load_checkpoint(_save_tiny(tmp_path, mutate))


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(text)
    other = tmp_path / "other.pt"
    torch.save({"weights": [1, 2, 3]}, other)
    with pytest.raises(CheckpointError, match="expected a dict with a 'state_dict' entry"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth.tar")


def test_our_checkpoint_round_trip_keeps_config_and_state(tmp_path):
    model = tiny_model(arch="resnet50", width=4)
    path = save_checkpoint(tmp_path / "ours.pth.tar", model, train_config={"task": "estimator"}, epoch=3, step=42,
                           optimizer={"state": {}, "param_groups": []})
    loaded, ckpt = load_checkpoint(path, return_checkpoint=True)
    assert loaded.config == model.config
    assert ckpt["step"] == 42 and ckpt["config"]["train"]["task"] == "estimator"
    loaded_state = loaded.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(loaded_state[k], v), k
