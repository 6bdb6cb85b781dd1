"""A served policy over the 5 × 5 AI-Clinician action bins (``action_bin`` = 5·fluid_bin + nee_bin), e.g. discrete
CQL's (:mod:`ogsrl.agents.cql_discrete`), mapped to physical doses so that ``ogsrl truth``, OPE and serving score it
like any other policy.

Bins per action dimension j: sub-bin 0 is no dose; sub-bins 1–4 are the quartiles of the train split's non-zero doses
(``ogsrl.cohort.extract.fit_action_bins``): (0, e₁), [e₁, e₂), [e₂, e₃), [e₃, max]. The policy is

    π(a|s) = P(b|s) · Π_j p_j(a_j | b_j),   P(b|s) = softmax(logits(s))_b,   b = (b_fluid, b_nee) the bin of a
    p_j(a_j | 0) = δ0;   p_j(a_j | k) = TruncN(y_j; μ_jk, σ_jk², [lo_jk, hi_jk])·dy/da   for k ≥ 1,

with y = log(1 + a/c)/log(1 + max/c) (the actors' scaled axis) and (μ_jk, σ_jk) the mean and sd of the train doses'
y within the sub-bin, so the dose inside a bin follows the clinicians' own doses there. The density is w.r.t.
(δ0 + Lebesgue) per dimension in physical units, like :class:`ogsrl.agents.actor.SavedPolicy`'s. ``act_mode`` sample
draws a bin, then the doses; mode takes the most probable bin and each sub-bin's median dose. A checkpoint holds the
logits network (weights + normaliser) and the dose model; nothing of the learner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import special, stats

from ogsrl import features
from ogsrl.agents import common
from ogsrl.agents.common import FloatArray

BINNED_KIND = "binned"
"""checkpoint kind of a :class:`BinnedPolicy`"""
N_SUB = 5
"""sub-bins per action dimension (0 = no dose, 1–4 = quartiles of the non-zero doses)"""
N_BINS = N_SUB * N_SUB
"""joint bins (``action_bin`` ∈ 0 … 24)"""


def sub_bins(values: FloatArray, edges: Sequence[float]) -> np.ndarray:
    """0 for no dose, else 1 + number of edges ≤ value (1–4), as ``ogsrl.cohort.extract`` assigns them."""
    out = np.zeros(len(values), dtype=np.int64)
    nz = values > 0
    out[nz] = 1 + np.searchsorted(np.asarray(edges, dtype=np.float64), values[nz], side="right").clip(0, 3)
    return out


def _scale(values: FloatArray, j: int) -> FloatArray:
    """Physical doses of action dimension ``j`` → the scaled axis y."""
    return np.log1p(np.asarray(values, np.float64) / common.ACTION_RESOLUTION[j]) / common.LOG_SPAN[j]


class DoseModel:
    """Per dimension and non-zero sub-bin, a truncated normal on the scaled axis; arrays ``(A, N_SUB)`` (column 0
    unused)."""

    def __init__(self, edges: Mapping[str, Sequence[float]], lo: FloatArray, hi: FloatArray, mu: FloatArray,
                 sd: FloatArray) -> None:
        self.edges = {a: [float(x) for x in edges[a]] for a in features.ACTIONS}
        self.lo, self.hi, self.mu, self.sd = (np.asarray(t, dtype=np.float64) for t in (lo, hi, mu, sd))

    @classmethod
    def fit(cls, actions: FloatArray, edges: Mapping[str, Sequence[float]]) -> DoseModel:
        """Fit on logged physical actions ``(N, A)`` binned by ``edges`` (quartile edges per action column)."""
        a_dim = len(features.ACTIONS)
        lo, hi = np.zeros((a_dim, N_SUB)), np.ones((a_dim, N_SUB))
        mu, sd = np.full((a_dim, N_SUB), 0.5), np.ones((a_dim, N_SUB))
        y = common.scale_actions(actions)
        for j, name in enumerate(features.ACTIONS):
            e = _scale(np.r_[0.0, edges[name], common.ACTION_MAX[j]], j)  # (5,) edges on the scaled axis
            sub = sub_bins(actions[:, j], edges[name])
            for k in range(1, N_SUB):
                lo[j, k], hi[j, k] = e[k - 1], max(e[k], e[k - 1] + 1e-6)
                vals = y[sub == k, j]
                mu[j, k] = vals.mean() if len(vals) else 0.5 * (lo[j, k] + hi[j, k])
                sd[j, k] = max(vals.std() if len(vals) > 1 else hi[j, k] - lo[j, k], 1e-3)
        return cls(edges, lo, hi, mu, sd)

    def _dist(self, j: int, k: np.ndarray) -> tuple[np.ndarray, ...]:
        mu, sd = self.mu[j, k], self.sd[j, k]
        return (self.lo[j, k] - mu) / sd, (self.hi[j, k] - mu) / sd, mu, sd

    def bins(self, actions: FloatArray) -> np.ndarray:
        """Sub-bins ``(B, A)`` of physical actions."""
        return np.stack([sub_bins(actions[:, j], self.edges[a]) for j, a in enumerate(features.ACTIONS)], axis=1)

    def log_density(self, actions: FloatArray) -> FloatArray:
        """Σ_j log p_j(a_j | b_j) ``(B,)`` w.r.t. (δ0 + Lebesgue) in physical units, for each row's own bin."""
        sub = self.bins(actions)
        out = np.zeros(len(actions))
        y = common.scale_actions(actions)
        for j in range(actions.shape[1]):
            nz = sub[:, j] > 0
            a, b, mu, sd = self._dist(j, sub[nz, j])
            jac = -np.log((common.ACTION_RESOLUTION[j] + actions[nz, j]) * common.LOG_SPAN[j])
            out[nz] += stats.truncnorm.logpdf(y[nz, j], a, b, loc=mu, scale=sd) + jac
        return out

    def doses(self, sub: np.ndarray, u: FloatArray | None) -> FloatArray:
        """Physical doses ``(B, A)`` for sub-bins ``(B, A)``: the within-bin quantile ``u (B, A)``, or the median
        when ``u`` is None."""
        out = np.zeros(sub.shape)
        for j in range(sub.shape[1]):
            nz = sub[:, j] > 0
            a, b, mu, sd = self._dist(j, sub[nz, j])
            q = 0.5 if u is None else u[nz, j]
            y = stats.truncnorm.ppf(q, a, b, loc=mu, scale=sd)
            out[nz, j] = np.clip(common.ACTION_RESOLUTION[j] * np.expm1(y * common.LOG_SPAN[j]), 0.0,
                                 common.ACTION_MAX[j])
        return out

    def arrays(self) -> dict[str, torch.Tensor]:
        return {f"dose_{n}": torch.as_tensor(getattr(self, n)) for n in ("lo", "hi", "mu", "sd")}


class BinnedPolicy:
    """Categorical policy over the 25 bins with within-bin doses (module docstring), served as an
    :class:`ogsrl.policy.StochasticPolicy`."""

    kind = BINNED_KIND

    def __init__(self, net: torch.nn.Sequential, obs_mean: FloatArray, obs_std: FloatArray, hidden: Sequence[int],
                 doses: DoseModel, feature_names: Sequence[str], act_mode: str = "sample",
                 provenance: dict[str, Any] | None = None, sample_seed: int = 0) -> None:
        if act_mode not in ("sample", "mode"):
            raise ValueError(f"act_mode must be one of ['sample', 'mode'], got {act_mode!r}")
        if len(obs_mean) != len(feature_names):
            raise ValueError(f"the logits network reads {len(obs_mean)} features, got {len(feature_names)} names")
        self.net = net.eval()
        self.obs_mean, self.obs_std = np.asarray(obs_mean, np.float64), np.asarray(obs_std, np.float64)
        self.hidden = tuple(int(h) for h in hidden)
        self.doses, self.feature_names = doses, tuple(feature_names)
        self.act_mode, self.provenance = act_mode, dict(provenance or {})
        self.sample_seed = int(sample_seed)
        self._rng = np.random.default_rng(self.sample_seed)

    def with_serving(self, act_mode: str, provenance: dict[str, Any], sample_seed: int) -> BinnedPolicy:
        """The same policy with the stage's act_mode, provenance and sampling seed."""
        return BinnedPolicy(self.net, self.obs_mean, self.obs_std, self.hidden, self.doses, self.feature_names,
                            act_mode, provenance, sample_seed)

    @torch.no_grad()
    def log_probs_bins(self, obs: FloatArray) -> FloatArray:
        """log P(b|s) ``(B, 25)``."""
        x = common.check_obs(obs, self.feature_names, "binned policy")
        logits = self.net(torch.as_tensor((x - self.obs_mean) / self.obs_std, dtype=torch.float32)).double().numpy()
        return logits - special.logsumexp(logits, axis=1, keepdims=True)

    def sample(self, obs: FloatArray, rng: np.random.Generator) -> FloatArray:
        """Physical actions ``(B, A)`` drawn from π with ``rng``: a bin, then the doses inside it."""
        p = np.exp(self.log_probs_bins(obs))
        b = np.minimum((rng.uniform(size=(len(p), 1)) > np.cumsum(p, axis=1)).sum(axis=1), N_BINS - 1)
        sub = np.stack([b // N_SUB, b % N_SUB], axis=1)
        return self.doses.doses(sub, rng.uniform(size=sub.shape))

    def act(self, obs: FloatArray, rng: np.random.Generator | None = None) -> FloatArray:
        """Actions ``(B, A)`` following ``act_mode`` (sample: :meth:`sample`; mode: the most probable bin's
        median doses)."""
        if self.act_mode == "mode":
            b = self.log_probs_bins(obs).argmax(axis=1)
            return self.doses.doses(np.stack([b // N_SUB, b % N_SUB], axis=1), None)
        return self.sample(obs, rng if rng is not None else self._rng)

    def log_prob(self, obs: FloatArray, actions: FloatArray) -> FloatArray:
        """``log π(a|s)`` per row ``(B,)`` w.r.t. (δ0 + Lebesgue) per dimension, physical units."""
        if self.act_mode != "sample":
            raise ValueError("a policy served with act_mode 'mode' is deterministic and has no density; "
                             "importance sampling needs act_mode 'sample'")
        lp = self.log_probs_bins(obs)
        acts = common.check_actions(actions, lp.shape[0], "binned policy")
        sub = self.doses.bins(acts)
        return lp[np.arange(len(acts)), N_SUB * sub[:, 0] + sub[:, 1]] + self.doses.log_density(acts)

    def save(self, path: str | Path) -> None:
        """Write config.json + weights.pt (logits network, normaliser, dose model)."""
        doc = {"kind": BINNED_KIND, "feature_names": list(self.feature_names), "action_columns": list(features.ACTIONS),
               "action_max": common.ACTION_MAX.tolist(), "action_resolution": common.ACTION_RESOLUTION.tolist(),
               "act_mode": self.act_mode, "sample_seed": self.sample_seed, "hidden": list(self.hidden),
               "bin_edges": self.doses.edges, "provenance": self.provenance}
        state = {f"net.{k}": v.detach().clone() for k, v in self.net.state_dict().items()}
        state.update({"obs_mean": torch.as_tensor(self.obs_mean), "obs_std": torch.as_tensor(self.obs_std),
                      **self.doses.arrays()})
        common.save_checkpoint(path, doc, state)

    @classmethod
    def load(cls, path: str | Path) -> BinnedPolicy:
        """Rebuild a policy saved by :meth:`save` (tensors read with ``weights_only=True``)."""
        doc = common.read_checkpoint_config(path)
        if doc["kind"] != BINNED_KIND:
            raise ValueError(f"{path}: checkpoint kind {doc['kind']!r} is not {BINNED_KIND!r}")
        if (doc.get("action_columns") != list(features.ACTIONS)
                or not np.array_equal(doc.get("action_max"), common.ACTION_MAX)
                or not np.array_equal(doc.get("action_resolution"), common.ACTION_RESOLUTION)):
            raise ValueError(f"{path}: checkpoint action columns/bounds differ from ogsrl.features")
        t = common.read_checkpoint_tensors(path)
        names = tuple(doc["feature_names"])
        net = common.mlp(len(names), tuple(doc["hidden"]), N_BINS, torch.Generator())
        net.load_state_dict({k.removeprefix("net."): v for k, v in t.items() if k.startswith("net.")})
        doses = DoseModel(doc["bin_edges"], *(t[f"dose_{n}"].numpy() for n in ("lo", "hi", "mu", "sd")))
        return cls(net, t["obs_mean"].numpy(), t["obs_std"].numpy(), doc["hidden"], doses, names, doc["act_mode"],
                   doc.get("provenance"), int(doc.get("sample_seed", 0)))
