"""`--recipe released` takes the authors' training step (SPEC §6.1, "What one training step of
their code does"), checked against the step written out naively from SPEC §6.1:

* BatchNorm running statistics replayed pass by pass: for every pass through an encoder (train
  mode, even frozen, even under ``no_grad``) each BN layer folds the batch mean and unbiased
  variance of its input into ``running = (1 - momentum) * running + momentum * batch``, in
  the order of the passes. Estimator step: warped destination, warped source (unused at
  ``syn_loss_weight`` 0), unwarped source, then the two re-encoded warped images; encoder step:
  the queries, then the key images through the *query* encoder (``k_res``).
* The roles flip with the batch index within the epoch (``i % 2``), photo first every epoch.
* ``--epochs N`` trains N + 1 epochs, the cosine horizon included.

Tiny ResNet-18 (width 8), 32 px, CPU.
"""

from __future__ import annotations

import copy
import json
import math

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from model_zoo.augment import apply_warp, random_warp_batch  # noqa: E402
from model_zoo.resnet_cbn import share_batchnorm  # noqa: E402
from model_zoo.testing import TINY, NoScaler, make_tiny_tree, tiny_model  # noqa: E402
from model_zoo.train import EncoderObjective, EstimatorObjective, accumulated_step, role_index  # noqa: E402
from psc6k.cli import main  # noqa: E402
from psc6k.formats import TrainPairs, write_train_pairs_ps  # noqa: E402

PHOTO, SKETCH = 0, 1
SIZE, BATCH = 32, 4


class _Grids:
    """The warp grids both sides use, in the order they are drawn (source/query first)."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)
        self.drawn: list[torch.Tensor] = []

    def __call__(self, n, size, device):
        grid = random_warp_batch(n, size, generator=self.g)
        self.drawn.append(grid)
        return grid


def _released_model(seed=0):
    torch.manual_seed(seed)
    model = tiny_model()
    share_batchnorm(model.encoder_q)      # the released recipe's one BN for both conditions
    share_batchnorm(model.encoder_k)
    model.framework.bn_groups = 1         # one BN batch, as their single-GPU step
    return model.train()


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(BATCH, 3, SIZE, SIZE, generator=g), torch.rand(BATCH, 3, SIZE, SIZE, generator=g)


def _bn_state(encoder) -> dict[str, tuple[torch.Tensor, torch.Tensor, int]]:
    return {name: (m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked))
            for name, m in encoder.named_modules() if isinstance(m, nn.BatchNorm2d)}


def _replay(encoder, passes, last_layer: int) -> dict:
    """Running statistics of ``encoder``'s BN layers after ``passes`` [(normalised images, condition)],
    each layer's update written out from its input's batch statistics and its momentum."""
    encoder = copy.deepcopy(encoder)
    state = _bn_state(encoder)
    names = {m: name for name, m in encoder.named_modules() if isinstance(m, nn.BatchNorm2d)}
    for images, condition in passes:
        seen: list[tuple[nn.BatchNorm2d, torch.Tensor]] = []
        hooks = [m.register_forward_pre_hook(lambda mod, inp: seen.append((mod, inp[0].detach())))
                 for m in names]
        with torch.no_grad():
            encoder(images, condition, last_layer=last_layer)
        for h in hooks:
            h.remove()
        for mod, x in seen:
            name = names[mod]
            mean, var, n = state[name]
            mom = mod.momentum
            state[name] = ((1 - mom) * mean + mom * x.mean((0, 2, 3)),
                           (1 - mom) * var + mom * x.var((0, 2, 3), unbiased=True), n + 1)
    return state


def _assert_bn_equal(encoder, expected: dict, where: str) -> None:
    got = _bn_state(encoder)
    assert got.keys() == expected.keys()
    for name, (mean, var, n) in expected.items():
        g_mean, g_var, g_n = got[name]
        assert g_n == n, f"{where}: {name} counted {g_n} passes, expected {n}"
        torch.testing.assert_close(g_mean, mean, rtol=1e-4, atol=1e-6, msg=f"{where}: {name}.running_mean")
        torch.testing.assert_close(g_var, var, rtol=1e-4, atol=1e-6, msg=f"{where}: {name}.running_var")


def _roles(i: int) -> tuple[int, int]:
    """SPEC §6.1: batch index i within the epoch, photo first at even i."""
    return (PHOTO, SKETCH) if i % 2 == 0 else (SKETCH, PHOTO)


def test_estimator_step_bn_statistics_are_their_five_passes():
    model = _released_model()
    for p in model.framework.parameters():
        p.requires_grad_(False)
    objective = EstimatorObjective(model, recipe="released")
    objective.augment.color = nn.Identity()        # colour off: the replay sees the same pixels
    objective.augment.grids = grids = _Grids(1)
    opt = torch.optim.SGD(model.stn.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    last = max(model.config.corr_layers)
    for i in range(2):                              # batch indices 0 and 1: both role assignments
        photo, sketch = _batch(10 + i)
        before = copy.deepcopy(model)
        n_drawn = len(grids.drawn)
        accumulated_step(objective, opt, NoScaler(), photo, sketch, role_index("released", i, i))
        grid_src, grid_dst = grids.drawn[n_drawn:]  # drawn source first, as their trainer.py
        c_src, c_dst = _roles(i)
        src, dst = (photo, sketch) if c_src == PHOTO else (sketch, photo)
        src_aug, dst_aug = apply_warp(src, grid_src), apply_warp(dst, grid_dst)
        with torch.no_grad():       # the flows of the step, from the weights before it (train-mode BN)
            ref = copy.deepcopy(before)
            f_src, f_dst = ref.encode(src, c_src), ref.encode(dst_aug, c_dst)
            fwd, bwd = ref.estimate(f_src, f_dst), ref.estimate(f_dst, f_src)
        norm = before.normalize
        passes = [(norm(dst_aug), c_dst), (norm(src_aug), c_src), (norm(src), c_src),
                  (norm(apply_warp(src, fwd)), c_src), (norm(apply_warp(dst_aug, bwd)), c_dst)]
        _assert_bn_equal(model.encoder_q, _replay(before.encoder_q, passes, last), f"estimator step {i}")
        # layer4 is never reached (their corr_only=True), the key encoder never used
        assert all(int(m.num_batches_tracked) == int(b.num_batches_tracked) for m, b in zip(
            model.encoder_q.layer4.modules(), before.encoder_q.layer4.modules()) if isinstance(m, nn.BatchNorm2d))


def test_encoder_step_bn_statistics_include_the_keys_through_the_query_encoder():
    model = _released_model()
    objective = EncoderObjective(model, recipe="released")
    objective.augment.color = nn.Identity()
    objective.augment.grids = grids = _Grids(2)
    opt = torch.optim.SGD(model.encoder_parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    for i in range(2):
        photo, sketch = _batch(20 + i)
        before = copy.deepcopy(model)
        n_drawn = len(grids.drawn)
        accumulated_step(objective, opt, NoScaler(), photo, sketch, role_index("released", i, i),
                         moco=model.framework)
        grid_q, grid_k = grids.drawn[n_drawn:]
        c_q, c_k = _roles(i)
        im_q, im_k = (photo, sketch) if c_q == PHOTO else (sketch, photo)
        view_q, view_k = before.normalize(apply_warp(im_q, grid_q)), before.normalize(apply_warp(im_k, grid_k))
        _assert_bn_equal(model.encoder_q, _replay(before.encoder_q, [(view_q, c_q), (view_k, c_k)], 4),
                         f"encoder step {i}, query encoder")
        key = copy.deepcopy(before.encoder_k)    # the key pass runs after MoCo's momentum update
        with torch.no_grad():
            for p_k, p_q in zip(key.parameters(), before.encoder_q.parameters()):
                p_k.mul_(model.framework.momentum).add_(p_q, alpha=1 - model.framework.momentum)
        _assert_bn_equal(model.encoder_k, _replay(key, [(view_k, c_k)], 4), f"encoder step {i}, key encoder")


def test_paper_recipe_has_only_the_passes_its_losses_use():
    """The difference row of docs/model_zoo.md: paper = source, warped target, the two re-encoded."""
    model = _released_model()
    objective = EstimatorObjective(model, recipe="paper")
    objective.augment.color = nn.Identity()
    objective.augment.grids = _Grids(3)
    photo, sketch = _batch(30)
    counts = lambda: int(model.encoder_q.layer1[0].bn1.norms[0].num_batches_tracked)  # noqa: E731
    n0 = counts()
    objective(photo, sketch, 0)
    assert counts() - n0 == 4
    objective.recipe = "released"
    n0 = counts()
    objective(photo, sketch, 0)
    assert counts() - n0 == 5


@pytest.mark.parametrize("recipe", ["released", "paper"])
def test_roles_epochs_and_learning_rate_of_a_run(recipe, tmp_path, monkeypatch):
    """A run of 3 batches per epoch (odd: every other epoch differs between the two rules) and
    --epochs 2, against SPEC §6.1 written out: released trains 3 epochs, roles by i % 2 restarting
    each epoch, cosine over 3 - warmup epochs; paper trains 2, roles by the global step."""
    import model_zoo.train as train_mod

    root = tmp_path / "sk"
    photos, sketches = make_tiny_tree(root, n_pairs=6, size=SIZE)
    train_path = tmp_path / "train.csv"
    write_train_pairs_ps(TrainPairs.from_paths(photos, sketches), train_path)
    seen: list[tuple[int, float]] = []

    def step_spy(runner, optimizer, scaler, photo, sketch, role, *args, **kwargs):
        # the step itself is checked above; here only which source it gets and at which lr
        seen.append((train_mod._conditions(role)[0], optimizer.param_groups[0]["lr"]))
        return {"loss": 0.0}

    monkeypatch.setattr(train_mod, "accumulated_step", step_spy)
    out = tmp_path / "run"
    n_epochs, warmup, lr = 2, 1, 0.05
    tiny_json = json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()})
    assert main(["train", "estimator", "--recipe", recipe, "--images", str(root), "--train-pairs", str(train_path),
                 "--model-json", tiny_json, "--batch-size", "2", "--image-size", str(SIZE),
                 "--epochs", str(n_epochs), "--warmup-epochs", str(warmup), "--lr", str(lr), "--device", "cpu",
                 "--workers", "0", "--no-progress", "--log-every", "1", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["kind"] == "train"]
    # SPEC §6.1 written out
    run_epochs = n_epochs + 1 if recipe == "released" else n_epochs
    expected_roles, expected_lr = [], []
    step = 0
    for epoch in range(run_epochs):
        e_lr = (lr * (epoch + 1) / warmup if epoch + 1 < warmup
                else lr * 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (run_epochs - warmup))))
        for i in range(3):
            counter = i if recipe == "released" else step
            expected_roles.append(PHOTO if counter % 2 == 0 else SKETCH)
            expected_lr.append((epoch, e_lr))
            step += 1
    assert [r for r, _ in seen] == expected_roles
    assert [v for _, v in seen] == [pytest.approx(v, rel=1e-12) for _, v in expected_lr]
    assert [(r["epoch"], r["lr"]) for r in rows] == [(e, pytest.approx(v, rel=1e-12)) for e, v in expected_lr]
