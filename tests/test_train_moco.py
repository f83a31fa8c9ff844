"""MoCo's single-process shuffle-BN emulation (model_zoo.moco.MoCo.bn_groups).

Without DDP there is no cross-GPU shuffle: a query and its positive key would be normalised
with the statistics of one and the same batch, the leak MoCo §3.3 closes by shuffling. The
emulation encodes queries in contiguous groups and keys in groups of a random permutation,
each group with its own BatchNorm statistics. The reference below is a naive loop over groups.
"""

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
