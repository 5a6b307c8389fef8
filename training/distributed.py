"""Data-parallel PPO learners over ``torch.distributed`` (no Ray here; ``ray_app/learner_group.py``
starts the processes and passes learner 0's address to the others).

Each of ``world`` learners holds an equal share of a round's env columns: learner ``rank`` has
columns [rank * N, (rank + 1) * N) of the world * N columns, as a flat time-major (T, N) batch.
``ppo_update(..., data_parallel=dp)`` then does one learner's update on the whole batch:

- every learner draws the same global minibatches (the same seed, so the same generator), and
  trains on its own rows of each (``local_rows``);
- the losses are weighted means over the whole minibatch: the weight sums and the advantages' mean
  and variance are summed over the learners first (``minibatch_totals``, two all-reduces per epoch),
  so each learner's loss is its part of the whole minibatch's mean;
- the gradients, with the losses' parts packed behind them, are summed over the learners in one
  all-reduce per minibatch (``all_reduce_gradients``) before clipping, so every learner clips the
  same norm and takes the same Adam step, and the weights stay equal everywhere.

gloo on CPU, NCCL on CUDA (one GPU per learner: NCCL does not run two ranks on one device).
"""

from __future__ import annotations

import datetime
import socket

import numpy as np
import torch
import torch.distributed as dist


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (learner 0's rendezvous; bound again at once by the store)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def backend_for(device: str | torch.device) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


class DataParallel:
    """One learner's place in a group of ``world``, and the group's collective operations."""

    def __init__(self, rank: int, world: int, group=None):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not within a world of {world}")
        self.rank, self.world, self.group = rank, world, group

    @classmethod
    def join(cls, rank: int, world: int, address: str, port: int, device: str = "cpu",
             timeout_s: float = 600.0) -> "DataParallel":
        """Join the process group whose TCP store learner 0 (rank 0) hosts at ``address:port``.
        Blocks until all ``world`` learners have joined (or ``timeout_s``, which also bounds every
        later collective: a learner lost mid-update fails the others instead of hanging them)."""
        if not dist.is_initialized():
            dist.init_process_group(backend_for(device), init_method=f"tcp://{address}:{port}", rank=rank,
                                    world_size=world, timeout=datetime.timedelta(seconds=timeout_s or 600.0))
        return cls(rank, world)

    def leave(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    # ------------------------------------------------------------ collectives
    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over the learners, in place; returns it."""
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Learner 0's parameters and buffers everywhere (they are built from one seed, so this only
        guards against a factory that is not deterministic)."""
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, src=0, group=self.group)

    def all_reduce_gradients(self, params: list[torch.Tensor], extras: torch.Tensor) -> torch.Tensor:
        """Sum every parameter's gradient, and ``extras`` (a 1-D float tensor: the losses' parts),
        over the learners, in one all-reduce of one flat buffer. Returns the summed ``extras``.
        A parameter without a gradient keeps none (the learners share one model and one code path,
        so they agree on which parameters have one)."""
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([*(g.reshape(-1) for g in grads), extras.to(grads[0].dtype if grads else extras.dtype)])
        self.all_reduce(flat)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n
        return flat[offset:].to(extras.dtype)

    # ------------------------------------------------------------ the global minibatches
    local_cols: int = 0  # N, this learner's env columns in the current update (the learner sets it)

    def local_rows(self, groups: list[np.ndarray], cols: int | None = None) -> list[np.ndarray]:
        """This learner's flat rows of each global minibatch, in their order. ``groups`` index the
        global flat batch, row t * (world * N) + c for env column c; this learner holds columns
        [rank * N, (rank + 1) * N) as its rows t * N + (c - rank * N). N: ``cols`` (default
        ``local_cols``)."""
        n = int(cols or self.local_cols)
        if n <= 0:
            raise ValueError("local_rows needs this learner's column count")
        out = []
        for g in groups:
            t, c = np.divmod(np.asarray(g, dtype=np.int64), n * self.world)
            mine = (c // n) == self.rank
            out.append(t[mine] * n + (c[mine] - self.rank * n))
        return out

    def minibatch_totals(self, idxs: list[torch.Tensor], weights: torch.Tensor, pg_weights: torch.Tensor,
                         advantages: torch.Tensor, norm_adv: bool) -> list[dict]:
        """For each minibatch (this learner's rows ``idxs[k]``): the whole minibatch's policy-weight
        sum ``n``, value-weight sum ``v_n``, and the advantages' weighted mean and unbiased variance
        (``ppo_losses``' normalisation), summed over the learners: two all-reduces per epoch."""
        parts = torch.stack([torch.stack([pg_weights[i].sum(), weights[i].sum(), (advantages[i] * pg_weights[i]).sum()])
                             for i in idxs]).to(torch.float32)
        self.all_reduce(parts)
        n, v_n, adv_sum = parts.unbind(1)
        mean = adv_sum / n.clamp(min=1.0)
        var = torch.zeros_like(mean)
        if norm_adv:
            sq = torch.stack([(pg_weights[i] * (advantages[i] - mean[k]) ** 2).sum() for k, i in enumerate(idxs)])
            var = self.all_reduce(sq.to(torch.float32)) / (n - 1.0).clamp(min=1.0)
        return [dict(n=n[k], v_n=v_n[k], adv_mean=mean[k], adv_var=var[k]) for k in range(len(idxs))]

    def explained_variance(self, values, returns, weights) -> float:
        """``ppo.explained_variance`` over every learner's rows (population variances; NaN where
        undefined), from sums in float64."""
        v = torch.as_tensor(values).flatten().to(torch.float64)
        r = torch.as_tensor(returns).flatten().to(torch.float64)
        m = (torch.as_tensor(weights).flatten() > 0).to(torch.float64)
        d = r - v
        s = torch.stack([m.sum(), (m * r).sum(), (m * r * r).sum(), (m * d).sum(), (m * d * d).sum()])
        n, sr, srr, sd, sdd = self.all_reduce(s).tolist()
        if n == 0:
            return float("nan")
        var_r = srr / n - (sr / n) ** 2
        if var_r <= 0:
            return float("nan")
        return float(1.0 - (sdd / n - (sd / n) ** 2) / var_r)
