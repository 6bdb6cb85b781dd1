"""The ensemble's networks: E member MLPs evaluated as one batched tensor op, with learned log-variance bounds."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as tf


class EnsembleLinear(nn.Module):
    """E independent affine maps applied as one batched matmul: (E, B, i) → (E, B, o)."""

    def __init__(self, n_members: int, n_in: int, n_out: int, generator: torch.Generator) -> None:
        super().__init__()
        w = torch.empty(n_members, n_in, n_out)
        nn.init.trunc_normal_(w, std=1.0 / (2.0 * math.sqrt(n_in)), a=-2.0 / math.sqrt(n_in),
                              b=2.0 / math.sqrt(n_in), generator=generator)
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(n_members, 1, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)  # (E, B, i) @ (E, i, o) + (E, 1, o)


def soft_clamp(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Differentiable clamp of x into (lo, hi): hi − softplus(hi − x), then lo + softplus(· − lo)."""
    x = hi - tf.softplus(hi - x)
    return lo + tf.softplus(x - lo)


class EnsembleNet(nn.Module):
    """The E member MLPs plus normalisation statistics (buffers, so they travel in the state_dict)."""

    def __init__(self, n_members: int, n_in: int, hidden: tuple[int, ...], n_gauss: int, n_logit: int,
                 n_elites: int, generator: torch.Generator) -> None:
        super().__init__()
        dims = [n_in, *hidden]
        self.layers = nn.ModuleList(EnsembleLinear(n_members, a, b, generator) for a, b in zip(dims[:-1], dims[1:]))
        self.head = EnsembleLinear(n_members, dims[-1], 2 * n_gauss + n_logit, generator)
        self.skip = EnsembleLinear(n_members, n_in, 2 * n_gauss + n_logit, generator)  # linear path x → outputs
        with torch.no_grad():
            self.skip.weight.zero_()
        self.max_logvar = nn.Parameter(torch.full((n_members, 1, n_gauss), 0.5))
        self.min_logvar = nn.Parameter(torch.full((n_members, 1, n_gauss), -10.0))
        self.n_gauss = n_gauss
        self.register_buffer("in_mean", torch.zeros(n_in))
        self.register_buffer("in_std", torch.ones(n_in))
        self.register_buffer("out_mean", torch.zeros(n_gauss))
        self.register_buffer("out_std", torch.ones(n_gauss))
        self.register_buffer("elites", torch.arange(n_elites, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (E, B, S+A) normalised inputs → mean (E, B, G), logvar (E, B, G), logits (E, B, L)."""
        h = x
        for layer in self.layers:
            h = tf.silu(layer(h))
        out = self.head(h) + self.skip(x)
        g = self.n_gauss
        mean, logvar, logits = out[..., :g], out[..., g:2 * g], out[..., 2 * g:]
        return mean, soft_clamp(logvar, self.min_logvar, self.max_logvar), logits
