"""Probabilistic ensemble world model: E Gaussian MLPs over (state, action) → next-state change, reward, safety
costs, death and discharge.

References: PETS (Chua et al. 2018) and MOPO (Yu et al. 2020, arXiv 2005.13239); checked against OfflineRL-Kit
(yihaosun1124/OfflineRL-Kit, ``modules/dynamics_module.py`` and ``dynamics/ensemble_dynamics.py``): members are
batched as one ``(E, B, ·)`` tensor op, log-variance is soft-clamped between learned bounds, each member is fitted on
a bootstrap resample, early stopping and elite selection use a hold-out loss.

Heads per member (all in one output layer):
  * Gaussian, on standardised targets: the change ``s' − s`` of every continuous state feature and the reward;
  * Bernoulli logits: the next value of every binary feature (e.g. ``mechvent``), every cost column, death, and
    discharge (the stay ends alive during the step: logged stays leave the window by death, discharge or its end).
Static features (``kind == "static"`` or listed in ``copy_features``) are copied from ``s`` to ``s'``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.nn import functional as tf

from ogsrl.data.schema import Schema
from ogsrl.config import to_dict
from ogsrl.errors import DataError
from ogsrl.io import atomic_path
from ogsrl.world.data import RATIO_SOURCES, FloatArray, Layout, Transitions, finite_or_raise
from ogsrl.world.net import EnsembleNet

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
MODEL_FILE = "world_model.pt"
PREDICT_CHUNK = 1024
"""rows per batched forward pass at prediction time (keeps activations in cache; results do not depend on it)"""
CONFIG_FILE = "world_model.json"
Mode = Literal["mean", "random_member", "random_elite", "episode_elite"]
MODES: tuple[str, ...] = ("mean", "random_member", "random_elite", "episode_elite")


@dataclass(frozen=True, slots=True)
class EnsembleConfig:
    """Architecture and fitting of the ensemble."""

    n_members: int = 7
    """ensemble size E (MOPO: 7)"""
    n_elites: int = 5
    """members kept for rollouts, chosen by validation loss (MOPO: 5)"""
    hidden: tuple[int, ...] = (128, 128, 128)
    """hidden widths of each member's MLP (Swish activations; MOPO uses 4 × 200)"""
    lr: float = 2e-3
    """Adam learning rate"""
    weight_decay: float = 2.5e-5
    """decoupled weight decay on the linear weights"""
    batch_size: int = 256
    """rows per member per gradient step"""
    max_epochs: int = 100
    """hard cap on passes over the (bootstrap) training rows"""
    patience: int = 5
    """stop after this many epochs in which no member improved its validation loss"""
    min_improvement: float = 0.01
    """relative validation-loss decrease that counts as an improvement"""
    bootstrap: bool = True
    """fit each member on its own resample (with replacement) of the training rows"""
    logvar_bound_weight: float = 0.01
    """weight of the penalty max_logvar − min_logvar that keeps the learned bounds tight"""
    copy_features: tuple[str, ...] = ("gender", "readmission", "age", "weight")
    """state features copied unchanged from s to s' (in addition to kind "static")"""
    sum_features: tuple[str, ...] = ("fluid_cum", "urine_cum")
    """cumulative features computed by their identity (s' = s + fluid_ml, or + urine_step'); checked on the data"""
    ratio_features: tuple[str, ...] = ("pf_ratio",)
    """features computed from two predicted ones by their defining ratio (pf_ratio' = pao2'/fio2', see
    data.RATIO_SOURCES) when both are in the state; checked on the data"""
    seed: int = 0
    """seeds initialisation, bootstrap and minibatch order"""

    def __post_init__(self) -> None:
        if self.n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {self.n_members}")
        if not 1 <= self.n_elites <= self.n_members:
            raise ValueError(f"n_elites must be in [1, n_members={self.n_members}], got {self.n_elites}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {self.hidden}")
        for name in ("lr", "batch_size", "max_epochs", "patience"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0 or self.min_improvement < 0 or self.logvar_bound_weight < 0:
            raise ValueError("weight_decay, min_improvement and logvar_bound_weight must be >= 0")
        unknown = sorted(set(self.ratio_features) - set(RATIO_SOURCES))
        if unknown:
            raise ValueError(f"ratio_features: {unknown} have no defining ratio; known: {sorted(RATIO_SOURCES)}")


@dataclass(frozen=True, slots=True)
class Prediction:
    """Per-member predictive distribution in physical units."""

    next_mean: FloatArray
    """(E, B, S) mean of s' (binary: P(s'=1); copied: s)"""
    next_var: FloatArray
    """(E, B, S) variance of s' (binary: p(1−p); copied: 0)"""
    rew_mean: FloatArray
    """(E, B) mean reward"""
    rew_var: FloatArray
    """(E, B) reward variance"""
    cost_prob: FloatArray
    """(E, B, C) P(cost = 1)"""
    death_prob: FloatArray
    """(E, B) P(death in step)"""
    discharge_prob: FloatArray
    """(E, B) P(alive exit in step)"""
    delta_norm: FloatArray
    """(E, B, G) standardised Gaussian means, for disagreement"""


@dataclass(frozen=True, slots=True)
class StepSample:
    """One simulated step for a batch."""

    next_obs: FloatArray
    """(B, S)"""
    rew: FloatArray
    """(B,)"""
    cost_prob: FloatArray
    """(B, C)"""
    death_prob: FloatArray
    """(B,)"""
    discharge_prob: FloatArray
    """(B,)"""
    uncertainty: FloatArray
    """(B,) ensemble disagreement: max over members of ‖μ_e − μ̄‖₂ on standardised outputs"""
    cost_prob_max: FloatArray
    """(B, C) the most pessimistic member's cost probability (over the members the mode draws from)"""
    cost_prob_sd: FloatArray
    """(B, C) standard deviation of the cost probability over those members (their disagreement)"""


@dataclass(frozen=True, slots=True)
class FitResult:
    """Learning curve and outcome of :meth:`WorldModel.fit`."""

    history: list[dict[str, float]] = field(default_factory=list)
    """per epoch: epoch, train_loss, val_loss (mean over elites-to-be), best_val_loss"""
    member_val_loss: list[float] = field(default_factory=list)
    """best validation loss of each member"""
    elites: list[int] = field(default_factory=list)
    """indices of the elite members"""
    epochs: int = 0
    """epochs run"""
    stopped_early: bool = False
    """True when patience ran out before max_epochs"""


class WorldModel:
    """Ensemble + layout + config; fit, predict, one-step sampling, save/load."""

    def __init__(self, cfg: EnsembleConfig, layout: Layout, death_charge: float = 0.0) -> None:
        self.cfg = cfg
        self.layout = layout
        self.death_charge = float(death_charge)
        """reward charged per decision time left after a simulated death (the data's ``ogsrl.death_charge``; the
        reward head learns each step's reward without it)"""
        self._gen = torch.Generator().manual_seed(cfg.seed)
        n_in = len(layout.state_features) + layout.n_act_in
        self.net = EnsembleNet(cfg.n_members, n_in, cfg.hidden, layout.n_gauss, layout.n_logit, cfg.n_elites,
                               self._gen)
        self._lo, self._hi = layout.state_bounds()

    # ---- data → tensors -----------------------------------------------------------------------------------
    def _targets(self, d: Transitions) -> tuple[torch.Tensor, torch.Tensor]:
        """Gaussian targets (N, G) in physical units and Bernoulli targets (N, L)."""
        lay = self.layout
        g = np.concatenate([(d.next_obs - d.obs)[:, list(lay.gauss_idx)], d.rew[:, None]], axis=1)
        b = np.concatenate([d.next_obs[:, list(lay.binary_idx)], d.cost, d.death[:, None], d.exits[:, None]], axis=1)
        if lay.binary_idx and not np.isin(b[:, :len(lay.binary_idx)], (0.0, 1.0)).all():
            raise DataError("binary state features must be 0/1 in next_ columns",
                            column=str([lay.state_features[i] for i in lay.binary_idx]))
        return torch.from_numpy(g.astype(np.float32)), torch.from_numpy(np.clip(b, 0, 1).astype(np.float32))

    def _inputs(self, obs: np.ndarray, act: np.ndarray) -> torch.Tensor:
        """Validated, normalised (B, S+A) input tensor."""
        obs = np.asarray(obs, dtype=np.float32)
        act = np.asarray(act, dtype=np.float32)
        s, a = len(self.layout.state_features), len(self.layout.action_names)
        if obs.ndim != 2 or obs.shape[1] != s:
            raise ValueError(f"obs must be (B, {s}) with columns {list(self.layout.state_features)}, "
                             f"got shape {obs.shape}")
        if act.ndim != 2 or act.shape != (obs.shape[0], a):
            raise ValueError(f"act must be (B={obs.shape[0]}, {a}) with columns {list(self.layout.action_names)}, "
                             f"got shape {act.shape}")
        finite_or_raise(np.concatenate([obs, act], axis=1), [*self.layout.state_features, *self.layout.action_names],
                        "world-model input")
        x = np.concatenate([obs, self.layout.action_input(act)], axis=1)
        return (torch.from_numpy(x) - self.net.in_mean) / self.net.in_std

    # ---- fitting ------------------------------------------------------------------------------------------
    def _loss(self, x: torch.Tensor, yg: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """Per-member loss (E,): mean Gaussian NLL over G standardised outputs + mean BCE over L logits."""
        mean, logvar, logits = self.net(x)
        nll = 0.5 * (((mean - yg) ** 2) * torch.exp(-logvar) + logvar).mean(dim=(1, 2))
        bce = tf.binary_cross_entropy_with_logits(logits, yb.expand_as(logits), reduction="none").mean(dim=(1, 2))
        return nll + bce

    def fit(self, train: Transitions, val: Transitions) -> FitResult:
        """Fit all members; early-stop on the validation loss; keep each member's best weights; pick elites.

        Loss per member e: mean_j ½[(μ_ej − y_j)² e^{−ℓ_ej} + ℓ_ej] + mean_k BCE(z_ek, b_k)
        + w·Σ(max_logvar − min_logvar), summed over members.
        """
        cfg, net = self.cfg, self.net
        if len(train) < 2 or len(val) < 1:
            raise ValueError(f"need >= 2 training and >= 1 validation rows, got {len(train)} and {len(val)}")
        for name, d in (("train", train), ("val", val)):
            res = np.abs(self.layout.sum_residual(d.obs, d.act, d.next_obs))
            bad = res > 0.5 + 1e-4 * np.abs(d.next_obs[:, list(self.layout.sum_idx)])
            if bad.any():
                col = int(np.flatnonzero(bad.any(0))[0])
                raise DataError("next value is not the current value plus its increment; remove it from "
                                "world.model.sum_features", table=name,
                                column=f"next_{self.layout.state_features[self.layout.sum_idx[col]]}",
                                rows=np.flatnonzero(bad[:, col]).tolist())
            for i, (a, b) in self._ratios:
                derived = d.next_obs[:, a] / np.maximum(d.next_obs[:, b], 1e-6)
                bad_r = np.abs(d.next_obs[:, i] - derived) > 0.5 + 1e-3 * np.abs(derived)
                if bad_r.any():
                    raise DataError(f"next value is not next_{self.layout.state_features[a]} / "
                                    f"next_{self.layout.state_features[b]}; remove it from world.model.ratio_features",
                                    table=name, column=f"next_{self.layout.state_features[i]}",
                                    rows=np.flatnonzero(bad_r).tolist())
        x_tr = np.concatenate([train.obs, self.layout.action_input(train.act)], axis=1)
        yg_tr, yb_tr = self._targets(train)
        with torch.no_grad():
            net.in_mean.copy_(torch.from_numpy(x_tr.mean(0)))
            net.in_std.copy_(torch.from_numpy(np.where(x_tr.std(0) > 1e-6, x_tr.std(0), 1.0)))
            net.out_mean.copy_(yg_tr.mean(0))
            sd = yg_tr.std(0)
            net.out_std.copy_(torch.where(sd > 1e-6, sd, torch.ones_like(sd)))
            rate = yb_tr.mean(0).clamp(1e-4, 1 - 1e-4)  # start Bernoulli heads at the base rates
            net.head.bias[:, 0, 2 * self.layout.n_gauss:] = torch.log(rate / (1 - rate))
        xt = self._inputs(train.obs, train.act)
        yt = (yg_tr - net.out_mean) / net.out_std
        xv = self._inputs(val.obs, val.act).expand(cfg.n_members, -1, -1)
        yg_v, yb_v = self._targets(val)
        yv = (yg_v - net.out_mean) / net.out_std
        n, e = len(train), cfg.n_members
        g = self._gen
        idx = (torch.randint(0, n, (e, n), generator=g) if cfg.bootstrap
               else torch.arange(n).expand(e, n).clone())  # (E, N) row indices per member
        decay = [p for name, p in net.named_parameters() if name.endswith("weight")]
        rest = [p for name, p in net.named_parameters() if not name.endswith("weight")]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)
        best = np.full(e, np.inf)
        best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        result = FitResult()
        stale = 0
        was_training = net.training
        for epoch in range(1, cfg.max_epochs + 1):
            net.train()
            idx = idx.gather(1, torch.argsort(torch.rand(e, n, generator=g), dim=1))  # shuffle each member's rows
            losses = []
            for start in range(0, n, cfg.batch_size):
                b = idx[:, start:start + cfg.batch_size]  # (E, b)
                per_member = self._loss(xt[b], yt[b], yb_tr[b])
                loss = per_member.sum() + cfg.logvar_bound_weight * (net.max_logvar - net.min_logvar).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(per_member.detach().mean()))
            net.eval()
            with torch.inference_mode():
                vloss = self._loss(xv, yv, yb_v).numpy().astype(np.float64)
            finite = np.isfinite(best)
            margin = cfg.min_improvement * np.abs(np.where(finite, best, 0.0))
            improved = ~finite | (vloss < np.where(finite, best, 0.0) - margin)
            if improved.any():
                sd = net.state_dict()
                for k, v in sd.items():
                    if v.ndim >= 1 and v.shape[0] == e and not k.startswith(("in_", "out_", "elites")):
                        best_state[k][improved] = v[improved].detach()
                best[improved] = vloss[improved]
                stale = 0
            else:
                stale += 1
            result.history.append({"epoch": epoch, "train_loss": float(np.mean(losses)),
                                   "val_loss": float(np.sort(vloss)[:cfg.n_elites].mean()),
                                   "best_val_loss": float(np.sort(best)[:cfg.n_elites].mean())})
            log.debug("epoch %d train %.4f val %.4f", epoch, np.mean(losses), result.history[-1]["val_loss"])
            if stale >= cfg.patience:
                break
        for k in ("in_mean", "in_std", "out_mean", "out_std"):
            best_state[k] = net.state_dict()[k]
        elites = np.argsort(best, kind="stable")[:cfg.n_elites]
        best_state["elites"] = torch.as_tensor(np.sort(elites), dtype=torch.long)
        net.load_state_dict(best_state)
        net.train(was_training)
        result = FitResult(history=result.history, member_val_loss=best.tolist(),
                           elites=sorted(int(i) for i in elites), epochs=len(result.history),
                           stopped_early=stale >= cfg.patience)
        log.info("world model: %d epochs, elites %s, elite val loss %.4f", result.epochs, result.elites,
                 float(np.sort(best)[:cfg.n_elites].mean()))
        return result

    # ---- prediction ---------------------------------------------------------------------------------------
    @property
    def elites(self) -> np.ndarray:
        """(n_elites,) indices of the elite members."""
        return self.net.elites.numpy().copy()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All members on normalised inputs x (B, S+A) → mean, logvar (E, B, G), logits (E, B, L).

        Rows go through in chunks of PREDICT_CHUNK so each layer's (E, chunk, H) activations stay cache-sized;
        members are never looped over.
        """
        e = self.cfg.n_members
        parts = [self.net(x[i:i + PREDICT_CHUNK].expand(e, -1, -1)) for i in range(0, len(x), PREDICT_CHUNK)]
        if len(parts) == 1:
            return parts[0]
        return tuple(torch.cat([p[k] for p in parts], dim=1) for k in range(3))  # type: ignore[return-value]

    def predict(self, obs: np.ndarray, act: np.ndarray) -> Prediction:
        """Every member's predictive distribution for states ``obs (B, S)`` and actions ``act (B, A)``."""
        x = self._inputs(obs, act)
        net, lay = self.net, self.layout
        was_training = net.training
        net.eval()
        try:
            with torch.inference_mode():
                mean, logvar, logits = self.forward(x)
                prob = torch.sigmoid(logits)
                mu = mean * net.out_std + net.out_mean  # (E, B, G) physical units
                var = torch.exp(logvar) * net.out_std ** 2
        finally:
            net.train(was_training)
        obs = np.asarray(obs, dtype=np.float32)
        e, b = mu.shape[0], mu.shape[1]
        mu, var, prob = mu.numpy(), var.numpy(), prob.numpy()
        next_mean = np.broadcast_to(obs, (e, b, obs.shape[1])).copy()
        next_var = np.zeros_like(next_mean)
        gi, bi, nb, nc = list(lay.gauss_idx), list(lay.binary_idx), len(lay.binary_idx), len(lay.cost_names)
        next_mean[:, :, gi] += mu[:, :, :-1]
        next_var[:, :, gi] = var[:, :, :-1]
        next_mean[:, :, bi] = prob[:, :, :nb]
        next_var[:, :, bi] = prob[:, :, :nb] * (1 - prob[:, :, :nb])
        lay.apply_sums(obs, np.asarray(act, dtype=np.float32), next_mean)
        self.apply_ratios(next_mean)
        for i, j in zip(lay.sum_idx, lay.sum_src):
            if j < len(lay.state_features):
                next_var[:, :, i] = next_var[:, :, j]
        return Prediction(next_mean=next_mean, next_var=next_var, rew_mean=mu[:, :, -1], rew_var=var[:, :, -1],
                          cost_prob=prob[:, :, nb:nb + nc], death_prob=prob[:, :, -2], discharge_prob=prob[:, :, -1],
                          delta_norm=mean.numpy())

    @property
    def _ratios(self) -> list[tuple[int, tuple[int, int]]]:
        """(feature index, (numerator index, denominator index)) of each configured ratio feature in the state."""
        feats = self.layout.state_features
        gauss = set(self.layout.gauss_idx)
        out = []
        for name in self.cfg.ratio_features:
            num, den = RATIO_SOURCES[name]
            if name in feats and num in feats and den in feats and feats.index(name) in gauss:
                out.append((feats.index(name), (feats.index(num), feats.index(den))))
        return out

    def apply_ratios(self, nxt: np.ndarray) -> np.ndarray:
        """Set each ratio feature of ``nxt`` (..., S) from its (clipped) sources, in place; returns ``nxt``."""
        for i, (a, b) in self._ratios:
            num = np.clip(nxt[..., a], self._lo[a], self._hi[a])
            den = np.clip(nxt[..., b], max(self._lo[b], 1e-6), self._hi[b])
            nxt[..., i] = num / den
        return nxt

    def clip_state(self, obs: np.ndarray, nxt: np.ndarray) -> FloatArray:
        """:meth:`ogsrl.world.data.Layout.clip_state` of this model's layout."""
        return self.layout.clip_state(obs, nxt)

    def step(self, obs: np.ndarray, act: np.ndarray, mode: Mode, rng: np.random.Generator,
             member: np.ndarray | None = None) -> StepSample:
        """Simulate one step for a batch.

        ``mean``: average of the elites' means (binary features rounded); ``random_member`` / ``random_elite``:
        each row draws one member (all / elites) and samples its Gaussian and Bernoulli outputs with ``rng``;
        ``episode_elite``: like ``random_elite`` but row i uses the elite ``member[i]`` the caller drew for its whole
        episode (PETS "TS∞": a patient keeps one model of the dynamics, so model disagreement persists along a path).
        """
        if mode == "episode_elite":
            b = np.asarray(obs).shape[0] if np.ndim(obs) == 2 else -1
            if member is None or np.shape(member) != (b,) or not np.isin(member, self.elites).all():
                raise ValueError(f"mode episode_elite needs member: ({b},) elite indices from {self.elites.tolist()}")
        p = self.predict(obs, act)
        members = np.arange(self.cfg.n_members) if mode == "random_member" else self.elites
        dn = p.delta_norm[members]  # (M, B, G)
        unc = np.linalg.norm(dn - dn.mean(0, keepdims=True), axis=2).max(0).astype(np.float32)
        bi = list(self.layout.binary_idx)
        obs = np.asarray(obs, dtype=np.float32)
        if mode == "mean":
            nxt = p.next_mean[members].mean(0)
            nxt[:, bi] = (nxt[:, bi] >= 0.5).astype(np.float32)
            rew = p.rew_mean[members].mean(0)
            cost, death = p.cost_prob[members].mean(0), p.death_prob[members].mean(0)
            exit_ = p.discharge_prob[members].mean(0)
        elif mode in ("random_member", "random_elite", "episode_elite"):
            b = obs.shape[0]
            k = np.asarray(member) if mode == "episode_elite" else members[rng.integers(0, len(members), size=b)]
            rows = np.arange(b)
            nxt = p.next_mean[k, rows] + np.sqrt(p.next_var[k, rows]) * rng.standard_normal(obs.shape)
            nxt[:, bi] = (rng.random((b, len(bi))) < p.next_mean[k, rows][:, bi]).astype(np.float32)
            rew = p.rew_mean[k, rows] + np.sqrt(p.rew_var[k, rows]) * rng.standard_normal(b)
            cost, death, exit_ = p.cost_prob[k, rows], p.death_prob[k, rows], p.discharge_prob[k, rows]
        else:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        nxt = self.clip_state(obs, nxt)
        nxt = self.clip_state(obs, self.layout.apply_sums(obs, np.asarray(act, dtype=np.float32), nxt))
        nxt = self.clip_state(obs, self.apply_ratios(nxt))
        return StepSample(next_obs=nxt, rew=rew.astype(np.float32),
                          cost_prob=cost.astype(np.float32), death_prob=death.astype(np.float32),
                          discharge_prob=exit_.astype(np.float32), uncertainty=unc,
                          cost_prob_max=p.cost_prob[members].max(0).astype(np.float32),
                          cost_prob_sd=p.cost_prob[members].std(0).astype(np.float32))

    # ---- persistence --------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """JSON-serialisable description needed to rebuild the model."""
        lay = self.layout
        return {"format_version": FORMAT_VERSION, "config": to_dict(self.cfg),
                "state_features": list(lay.state_features), "action_names": list(lay.action_names),
                "cost_names": list(lay.cost_names), "copy_idx": list(lay.copy_idx),
                "binary_idx": list(lay.binary_idx), "gauss_idx": list(lay.gauss_idx),
                "sum_idx": list(lay.sum_idx), "sum_src": list(lay.sum_src), "death_charge": self.death_charge,
                **({"schema": lay.schema.to_dict()} if lay.schema is not None else {})}

    def save(self, directory: str | Path) -> None:
        """Write ``world_model.pt`` (state_dict of tensors) and ``world_model.json`` (config, names) atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / MODEL_FILE) as tmp:
            torch.save({k: v.detach().clone() for k, v in self.net.state_dict().items()}, tmp)
        with atomic_path(directory / CONFIG_FILE) as tmp:
            tmp.write_text(json.dumps(self.meta(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path, state_features: tuple[str, ...] | None = None,
             action_names: tuple[str, ...] | None = None) -> WorldModel:
        """Rebuild a saved model; ``state_features`` / ``action_names`` (when given) must match the saved ones."""
        directory = Path(directory)
        if not (directory / MODEL_FILE).is_file() or not (directory / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"no saved world model in {directory} (need {MODEL_FILE} and {CONFIG_FILE})")
        meta = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"world model format {meta.get('format_version')} != supported {FORMAT_VERSION}")
        saved_s, saved_a = tuple(meta["state_features"]), tuple(meta["action_names"])
        if state_features is not None and tuple(state_features) != saved_s:
            raise ValueError(f"state features {list(state_features)} do not match the saved model's "
                             f"{list(saved_s)} (names and order must be identical)")
        if action_names is not None and tuple(action_names) != saved_a:
            raise ValueError(f"action columns {list(action_names)} (dim {len(action_names)}) do not match the "
                             f"saved model's {list(saved_a)} (dim {len(saved_a)})")
        c = dict(meta["config"])
        c["hidden"] = tuple(c["hidden"])
        c["copy_features"] = tuple(c["copy_features"])
        c["sum_features"] = tuple(c["sum_features"])
        c["ratio_features"] = tuple(c.get("ratio_features", ()))
        cfg = EnsembleConfig(**c)
        schema = Schema.from_dict(meta["schema"]) if meta.get("schema") is not None else None
        layout = Layout(saved_s, saved_a, tuple(meta["cost_names"]), tuple(meta["copy_idx"]),
                        tuple(meta["binary_idx"]), tuple(meta["gauss_idx"]), tuple(meta["sum_idx"]),
                        tuple(meta["sum_src"]), schema)
        if Layout.make(saved_s, layout.cost_names, cfg.copy_features, cfg.sum_features, schema) != layout:
            raise ValueError(f"{directory / CONFIG_FILE}: feature layout is inconsistent with ogsrl.features")
        model = cls(cfg, layout, float(meta.get("death_charge", 0.0)))
        state = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
        model.net.load_state_dict(state)
        model.net.eval()
        return model
