"""MoCo v2 head and queue used to pre-train the PSCNet encoder on photo-sketch pairs (SPEC §6).

State-dict names follow the released checkpoints: ``encoder_q``, ``encoder_k``, ``fc_q.0/2``,
``fc_k.0/2``, ``queue`` [dim, K], ``queue_ptr`` [1] (int64).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from model_zoo.resnet_cbn import ResNetCBN

__all__ = ["MoCo", "concat_all_gather", "queue_by_age"]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def concat_all_gather(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` from every process along dim 0 (identity without DDP; no gradient)."""
    if not _distributed():
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def queue_by_age(queue: Tensor, queue_ptr: Tensor | int, batch: int) -> list[Tensor]:
    """The stored keys [dim, K] of a MoCo queue split into the batches that wrote them, oldest first.

    ``queue_ptr`` is the next slot to be written, i.e. the oldest stored key; each chunk holds the
    ``batch`` keys of one step, counted back from the newest (when ``batch`` does not divide K the
    oldest chunk is the part of a batch not yet overwritten).
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    ordered = torch.roll(queue, -int(queue_ptr), dims=1)
    size = ordered.shape[1]
    sizes = ([size % batch] if size % batch else []) + [batch] * (size // batch)
    return list(torch.split(ordered, sizes, dim=1))


class MoCo(nn.Module):
    """Momentum contrast (He et al. 2020; v2: MLP head) over two conditional-BN encoders.

    Parameters
    ----------
    encoder_q, encoder_k : ResNetCBN
        Query encoder (trained) and key encoder (momentum copy; initialised from the query).
    dim : int
        Embedding size (128).
    queue_size : int
        Negative keys K (8192 in the released models).
    momentum : float
        Key-encoder momentum m (0.999).
    temperature : float
        Softmax temperature T (0.07).
    bn_groups : int
        Single-process shuffle-BN emulation (MoCo §3.3): without DDP, queries are encoded in
        ``bn_groups`` contiguous groups and keys in as many groups of a random permutation, each
        group with its own BatchNorm statistics, as on ``bn_groups`` GPUs with shuffled keys.
        Without it a query and its positive key share one batch's statistics, which MoCo can
        exploit instead of learning (the leak the authors' DDP shuffle closes). 8: MoCo's
        8-GPU setup (batch 256 = 8 x 32). Groups keep at least 2 samples; 1 turns it off. Under
        DDP the real cross-process shuffle is used instead.
    """

    def __init__(self, encoder_q: ResNetCBN, encoder_k: ResNetCBN, dim: int = 128, queue_size: int = 8192,
                 momentum: float = 0.999, temperature: float = 0.07, bn_groups: int = 8):
        super().__init__()
        if bn_groups < 1:
            raise ValueError("bn_groups must be >= 1")
        self.queue_size, self.momentum, self.temperature = queue_size, momentum, temperature
        self.bn_groups = bn_groups
        # Buffers are registered before the child modules so that the state-dict order is the
        # released one (framework.queue, framework.queue_ptr, framework.encoder_q ...).
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.encoder_q = encoder_q
        self.encoder_k = encoder_k
        hidden = encoder_q.channels["layer4"]
        self.fc_q = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.fc_k = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.reset_key_encoder()

    @torch.no_grad()
    def reset_key_encoder(self) -> None:
        """Copy the query encoder and head into the key side and freeze the key side."""
        for q, k in zip(self._query_params(), self._key_params()):
            k.data.copy_(q.data)
            k.requires_grad = False

    def _query_params(self):
        return list(self.encoder_q.parameters()) + list(self.fc_q.parameters())

    def _key_params(self):
        return list(self.encoder_k.parameters()) + list(self.fc_k.parameters())

    @torch.no_grad()
    def _momentum_update(self) -> None:
        for q, k in zip(self._query_params(), self._key_params()):
            k.data.mul_(self.momentum).add_(q.data.detach(), alpha=1.0 - self.momentum)

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        keys = concat_all_gather(keys)
        n = keys.shape[0]
        ptr = int(self.queue_ptr)
        # wrap around instead of requiring K % batch == 0 (small CPU batches)
        idx = (torch.arange(n, device=keys.device) + ptr) % self.queue_size
        self.queue[:, idx] = keys.T.to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + n) % self.queue_size

    def _groups(self, n: int) -> int:
        """BN groups for a local batch of ``n`` (1 when not training: eval-mode BN cannot leak)."""
        if not self.training or _distributed():
            return 1
        return max(1, min(self.bn_groups, n // 2))

    def _queries(self, im_q: Tensor, cond_q: int) -> Tensor:
        groups = self._groups(im_q.shape[0])
        pooled = torch.cat([self.encoder_q.pooled(chunk, cond_q)[0] for chunk in torch.tensor_split(im_q, groups)])
        return F.normalize(self.fc_q(pooled), dim=1)

    @torch.no_grad()
    def _shuffled_keys(self, im_k: Tensor, cond_k: int) -> Tensor:
        """Key embeddings computed on a batch shuffled across BN groups (shuffle-BN, MoCo §3.3):
        across processes under DDP, across ``bn_groups`` groups of the local batch otherwise."""
        if not _distributed():
            groups = self._groups(im_k.shape[0])
            perm = torch.randperm(im_k.shape[0], device=im_k.device) if groups > 1 else None
            shuffled = im_k if perm is None else im_k[perm]
            pooled = torch.cat([self.encoder_k.pooled(chunk, cond_k)[0] for chunk in torch.tensor_split(shuffled, groups)])
            k = F.normalize(self.fc_k(pooled), dim=1)
            return k if perm is None else k[torch.argsort(perm)]
        local = im_k.shape[0]
        gathered = concat_all_gather(im_k)
        world, rank = dist.get_world_size(), dist.get_rank()
        perm = torch.randperm(gathered.shape[0], device=im_k.device)
        dist.broadcast(perm, src=0)
        mine = perm.view(world, -1)[rank]
        k = F.normalize(self.fc_k(self.encoder_k.pooled(gathered[mine], cond_k)[0]), dim=1)
        k_all = concat_all_gather(k)
        unshuffle = torch.argsort(perm)
        return k_all[unshuffle.view(world, -1)[rank]][:local]

    @torch.no_grad()
    def probe(self, im_q: Tensor, im_k: Tensor, cond_q: int, cond_k: int) -> dict[str, Tensor]:
        """Query embeddings of ``im_q`` and key embeddings of ``im_k`` [N, dim], computed as in a
        training step (same BN grouping and key shuffle) but without moving the key encoder or the
        queue: for checking what the contrastive task rewards (see ``bench_train_synth.py``)."""
        return {"q": self._queries(im_q, cond_q), "k": self._shuffled_keys(im_k, cond_k)}

    def enqueue(self, keys: Tensor) -> None:
        """Push keys [N, dim] into the queue (all processes' keys under DDP)."""
        self._enqueue(keys.float())

    def forward(self, im_q: Tensor, im_k: Tensor, cond_q: int, cond_k: int, *, update_key: bool = True,
                enqueue: bool = True, keys_through_query: bool = False
                ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """Contrastive logits [N, 1 + K] (positive first) and labels (zeros) for a query/key batch.

        With gradient accumulation the trainer calls this once per micro-batch with
        ``update_key`` only on the first (the key encoder moves once per optimizer step, as with
        one large batch) and ``enqueue=False``; it then gets the keys as a third output and
        pushes them all with :meth:`enqueue` after the last micro-batch, so that every query of
        the step sees the same negatives, as in one large batch.

        ``keys_through_query`` also passes the key images through the *query* encoder (no
        gradient, in the queries' BN groups), as the authors' ``forward`` does for its ``k_res``
        maps: the output is unused, but in train mode the pass moves the query encoder's
        BatchNorm running statistics (``--recipe released``).
        """
        q = self._queries(im_q, cond_q)
        if keys_through_query:
            with torch.no_grad():
                for chunk in torch.tensor_split(im_k, self._groups(im_k.shape[0])):
                    self.encoder_q(chunk, cond_k)
        with torch.no_grad():
            if update_key:
                self._momentum_update()
            k = self._shuffled_keys(im_k, cond_k)
        l_pos = (q * k.to(q.dtype)).sum(dim=1, keepdim=True)
        l_neg = q @ self.queue.clone().detach().to(q.dtype)
        logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        if not enqueue:
            return logits, labels, k
        self._enqueue(k.float())
        return logits, labels
