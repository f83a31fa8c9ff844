"""MoCo's single-process shuffle-BN emulation (model_zoo.moco.MoCo.bn_groups).

Without DDP there is no cross-GPU shuffle: a query and its positive key would be normalised
with the statistics of one and the same batch, the leak MoCo §3.3 closes by shuffling. The
emulation encodes queries in contiguous groups and keys in groups of a random permutation,
each group with its own BatchNorm statistics. The reference below is a naive loop over groups.
"""

import pytest
import torch
import torch.nn.functional as F

from model_zoo.pscnet import PSCNet


def _moco(groups: int):
    torch.manual_seed(0)
    model = PSCNet(width=8, feat_size=8, block_sizes=(2, 4, 8), flow_size=8, moco_queue=16)
    model.framework.bn_groups = groups
    return model.framework.train()


def _naive(fw, im_q, im_k, groups, perm):
    """Queries per contiguous group, keys per group of ``perm``, each group its own BN batch."""
    n = im_q.shape[0]
    q = torch.empty(n, 128)
    k = torch.empty(n, 128)
    for idx in torch.tensor_split(torch.arange(n), groups):
        q[idx] = F.normalize(fw.fc_q(fw.encoder_q.pooled(im_q[idx], 0)[0]), dim=1)
    for idx in torch.tensor_split(perm, groups):
        k[idx] = F.normalize(fw.fc_k(fw.encoder_k.pooled(im_k[idx], 1)[0]), dim=1)
    return q, k


def test_queries_and_keys_match_a_per_group_reference():
    fw = _moco(4)
    g = torch.Generator().manual_seed(1)
    im_q, im_k = torch.randn(8, 3, 32, 32, generator=g), torch.randn(8, 3, 32, 32, generator=g)
    with torch.no_grad():
        torch.manual_seed(5)
        q = fw._queries(im_q, 0)
        k = fw._shuffled_keys(im_k, 1)
        torch.manual_seed(5)
        perm = torch.randperm(8)
        q_ref, k_ref = _naive(fw, im_q, im_k, 4, perm)
    assert not torch.equal(perm, torch.arange(8))
    torch.testing.assert_close(q, q_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k, k_ref, atol=1e-5, rtol=1e-5)   # unshuffled back into batch order


def test_key_does_not_see_its_querys_batch():
    """Changing images outside a key's BN group leaves that key unchanged (one shared BN batch would not)."""
    fw = _moco(4)
    g = torch.Generator().manual_seed(2)
    im_k = torch.randn(8, 3, 32, 32, generator=g)
    with torch.no_grad():
        torch.manual_seed(7)
        k1 = fw._shuffled_keys(im_k, 1)
        torch.manual_seed(7)
        group_of_0 = next(idx for idx in torch.tensor_split(torch.randperm(8), 4) if 0 in idx)
        others = torch.tensor([i for i in range(8) if i not in group_of_0])
        im_k2 = im_k.clone()
        im_k2[others] += 3.0
        torch.manual_seed(7)
        k2 = fw._shuffled_keys(im_k2, 1)
        fw.bn_groups = 1                                   # one batch: key 0 sees every image
        k3 = fw._shuffled_keys(im_k, 1)
        k4 = fw._shuffled_keys(im_k2, 1)
    torch.testing.assert_close(k1[0], k2[0], atol=1e-5, rtol=1e-5)
    assert (k3[0] - k4[0]).abs().max() > 1e-3


def test_eval_mode_and_tiny_batches_use_one_group():
    fw = _moco(8)
    assert fw._groups(64) == 8 and fw._groups(5) == 2 and fw._groups(3) == 1
    fw.eval()
    assert fw._groups(64) == 1


@pytest.mark.parametrize("recipe", ["released", "paper"])
def test_training_step_is_the_moco_v2_reference(recipe):
    """Three optimizer steps of psc6k's encoder objective (one BN group, no augmentation) against
    MoCo v2's algorithm written out naively: momentum update before the keys, positive first,
    logits / T against the queue *before* this step's keys enter it, then enqueue; the
    query/key modality alternates per step (their ``step_pair``). Released: the key images also
    pass through the query encoder (their ``k_res``), which moves its BN running statistics."""
    import copy

    from model_zoo.train import EncoderObjective, accumulated_step

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        model = PSCNet(width=8, feat_size=8, block_sizes=(2, 4, 8), flow_size=8, moco_queue=32, moco_dim=16,
                       moco_momentum=0.9)
        model.framework.bn_groups = 1
        model.train()
        ref = copy.deepcopy(model)
        objective = EncoderObjective(model, recipe=recipe)
        objective.augment.enabled = False
        opt = torch.optim.SGD(model.encoder_parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        q_params = list(ref.encoder_q.parameters()) + list(ref.framework.fc_q.parameters())
        k_params = list(ref.encoder_k.parameters()) + list(ref.framework.fc_k.parameters())
        ref_opt = torch.optim.SGD(q_params, lr=0.1, momentum=0.9, weight_decay=1e-4)
        queue, ptr, m, t = ref.framework.queue.clone(), 0, 0.9, 0.07
        g = torch.Generator().manual_seed(3)
        for step in range(3):
            photo, sketch = torch.rand(8, 3, 32, 32, generator=g), torch.rand(8, 3, 32, 32, generator=g)
            got = accumulated_step(objective, opt, torch.amp.GradScaler("cuda", enabled=False), photo, sketch,
                                   step, 1, moco=model.framework)
            c_q, c_k = (0, 1) if step % 2 == 0 else (1, 0)
            x_q, x_k = (photo, sketch) if c_q == 0 else (sketch, photo)
            q = F.normalize(ref.framework.fc_q(ref.encoder_q.pooled(ref.normalize(x_q), c_q)[0]), dim=1)
            with torch.no_grad():
                if recipe == "released":
                    ref.encoder_q(ref.normalize(x_k), c_k)
                for p_q, p_k in zip(q_params, k_params):
                    p_k.data = p_k.data * m + p_q.data * (1 - m)
                k = F.normalize(ref.framework.fc_k(ref.encoder_k.pooled(ref.normalize(x_k), c_k)[0]), dim=1)
            logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue], 1) / t
            loss = F.cross_entropy(logits, torch.zeros(8, dtype=torch.long))
            ref_opt.zero_grad()
            loss.backward()
            ref_opt.step()
            queue[:, ptr:ptr + 8] = k.T
            ptr = (ptr + 8) % 32
            assert abs(got["moco"] - loss.item()) < 1e-5
        for name in ("encoder_q", "encoder_k"):
            for (key, a), b in zip(getattr(model, name).state_dict().items(), getattr(ref, name).state_dict().values()):
                torch.testing.assert_close(a.double(), b.double(), atol=1e-5, rtol=1e-5, msg=f"{name}.{key}")
        for name in ("fc_q", "fc_k"):
            for a, b in zip(getattr(model.framework, name).parameters(), getattr(ref.framework, name).parameters()):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.framework.queue.double(), queue, atol=1e-5, rtol=1e-5)
        assert int(model.framework.queue_ptr) == ptr
    finally:
        torch.set_default_dtype(old)


def test_queue_by_age_orders_the_stored_batches_oldest_first():
    from model_zoo.moco import queue_by_age

    fw = _moco(1)
    fw.queue.zero_()
    fw.queue_ptr.zero_()
    for b in range(5):                      # 5 batches of 6 into K = 16: wraps twice
        fw.enqueue(torch.full((6, 128), float(b + 1)))
    chunks = queue_by_age(fw.queue, fw.queue_ptr, 6)
    assert [c.shape[1] for c in chunks] == [4, 6, 6]
    assert [sorted(set(c[0].tolist())) for c in chunks] == [[3.0], [4.0], [5.0]]


def test_probe_is_the_training_forward_without_side_effects():
    fw = _moco(2)
    g = torch.Generator().manual_seed(4)
    im_q, im_k = torch.randn(8, 3, 32, 32, generator=g), torch.randn(8, 3, 32, 32, generator=g)
    queue, key_weight = fw.queue.clone(), fw.encoder_k.conv1.weight.clone()
    with torch.no_grad():
        fw.encoder_q.conv1.weight.add_(0.1)          # so that a momentum update would move the keys
        torch.manual_seed(9)
        out = fw.probe(im_q, im_k, 0, 1)
        torch.manual_seed(9)
        logits, _, k = fw(im_q, im_k, 0, 1, update_key=False, enqueue=False)
    torch.testing.assert_close(out["k"], k)
    torch.testing.assert_close((out["q"] * out["k"]).sum(1) / fw.temperature, logits[:, 0])
    assert torch.equal(fw.queue, queue) and torch.equal(fw.encoder_k.conv1.weight, key_weight)
