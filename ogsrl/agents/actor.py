"""The served actor, shared by every learner: a hurdle-Gaussian action density (:mod:`ogsrl.agents.common`) on a
normalised state, plus the objects that serve it.

* :class:`HurdleActor` — torch module: state (physical units) → mixture parameters; differentiable
  :meth:`HurdleActor.log_prob` w.r.t. (δ0 + Lebesgue) per action dimension in physical units (finite at the
  zero-dose atom), numpy :meth:`HurdleActor.sample` / :meth:`HurdleActor.mode`. Learners (BC, the on-policy
  methods) optimise it; their critics, multipliers and optimisers live in the learner, never here.
* :class:`SavedPolicy` — the numpy-facing :class:`ogsrl.policy.StochasticPolicy` around a trained actor, with its
  ``act_mode`` (``sample``: act draws from π; ``mode``: act returns the heaviest component's zero-or-median action).
  A checkpoint holds only the actor (weights + normaliser), feature names, action bounds and act_mode.
* :class:`GuardedPolicy` — a policy, the guardian and a fallback policy (the clinicians' behaviour clone): an action
  whose (s, a) the guardian rejects is replaced by the fallback's action. Its density, for OPE:

      π_g(a|s) = π(a|s)·1[(s, a) inside] + P_π(outside | s)·π_fb(a|s)

  with P_π(outside | s) estimated per distinct state from ``mc_samples`` actions drawn from π with a generator
  seeded by ``mc_seed`` on every call (so log_prob is a deterministic function of its inputs; the Monte-Carlo
  standard error is at most 0.5/√mc_samples). A logged action outside the set
  whose state has an estimated P(outside) of 0 gets log π_g = −inf (weight 0).

:func:`load_policy` reads either checkpoint kind by the ``kind`` in its config.json.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ogsrl import features
from ogsrl.agents import common
from ogsrl.agents.binned import BINNED_KIND, BinnedPolicy
from ogsrl.agents.categorical import CategoricalActor
from ogsrl.agents.common import FloatArray
from ogsrl.io import atomic_path

ActMode = Literal["sample", "mode"]
ACT_MODES: tuple[str, ...] = ("sample", "mode")
ACTOR_KIND = "actor"
"""checkpoint kind of a :class:`SavedPolicy`"""
GUARDED_KIND = "guarded"
"""checkpoint kind of a :class:`GuardedPolicy`"""
MC_CHUNK = 262_144
"""actions drawn per chunk by :meth:`GuardedPolicy.prob_outside`"""


class HurdleActor(nn.Module):
    """MLP policy head: state ``(B, S)`` in physical units → mixture logits ``(B, K)`` and, per component and action
    dimension ``(B, K, A)``, logit P(a=0), μ and log σ of the scaled non-zero action (see :mod:`common`).

    The input normaliser (``obs_mean``, ``obs_std``) is a pair of float64 buffers, so it is part of the state_dict.
    """

    def __init__(self, n_obs: int, hidden: Sequence[int], components: int, generator: torch.Generator,
                 space: common.ActionSpace = common.CANONICAL_SPACE) -> None:
        super().__init__()
        if components < 1 or not hidden or any(h <= 0 for h in hidden):
            raise ValueError(f"HurdleActor needs components ≥ 1 and positive hidden widths, got {components}, "
                             f"{list(hidden)}")
        self.space = space
        self.n_act = len(space.columns)
        self.k = components
        self.hidden = tuple(int(h) for h in hidden)
        self.net = common.mlp(n_obs, self.hidden, self.k + 3 * self.k * self.n_act, generator)
        self.register_buffer("obs_mean", torch.zeros(n_obs, dtype=torch.float64))
        self.register_buffer("obs_std", torch.ones(n_obs, dtype=torch.float64))

    def set_normaliser(self, mean: FloatArray, std: FloatArray) -> None:
        """Set the per-feature mean and std (std 1 for constant columns, see :func:`common.fit_normaliser`)."""
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=torch.float64))
        self.obs_std.copy_(torch.as_tensor(std, dtype=torch.float64))

    def forward(self, obs: torch.Tensor, hidden_dtype: torch.dtype = torch.float32
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Parameters for physical states ``obs (B, S)``; ``hidden_dtype`` bfloat16 runs the hidden layers' matmuls in
        bfloat16 (training speed, :func:`common.mlp_forward`; the output layer stays float32)."""
        x = ((obs.double() - self.obs_mean) / self.obs_std).float()
        out = common.mlp_forward(self.net, x, hidden_dtype)  # (B, K + 3KA)
        logit_w, rest = out[:, : self.k], out[:, self.k :].reshape(-1, 3, self.k, self.n_act)  # → (B, 3, K, A)
        logit0, raw_mu, raw_log_std = rest.unbind(dim=1)
        mu = common.soft_clamp(raw_mu, common.MU_MIN, common.MU_MAX)
        return logit_w, logit0, mu, common.soft_clamp(raw_log_std, common.LOG_STD_MIN, common.LOG_STD_MAX)

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Differentiable log π(a|s) per row ``(B,)`` for physical actions ``act (B, A)``, float64, w.r.t.
        (δ0 + Lebesgue) per dimension in physical units (the zero-dose atom has finite log-probability)."""
        act = act.double()
        res = torch.as_tensor(self.space.res_arr)
        span = torch.as_tensor(self.space.span_arr)
        y = torch.log1p(act / res) / span
        log_jac = torch.where(act > 0.0, -torch.log((res + act) * span), torch.zeros_like(act)).sum(dim=-1)
        return -common.hurdle_nll(*self(obs), y) + log_jac

    def encode(self, actions: FloatArray) -> torch.Tensor:
        """Physical actions ``(B, A)`` → scaled ``y (B, A)`` float64, what :meth:`nll` and the on-policy losses read."""
        return torch.as_tensor(common.scale_actions(np.asarray(actions, dtype=np.float64), self.space))

    def nll(self, obs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-row NLL of scaled actions ``y (B, A)`` (the BC objective; no Jacobian)."""
        return common.hurdle_nll(*self(obs), y)

    @torch.no_grad()
    def params(self, obs: FloatArray) -> tuple[FloatArray, ...]:
        """The four parameter arrays for a numpy batch, float64, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            out = self(torch.tensor(np.asarray(obs, dtype=np.float64)))  # a copy: obs may be read-only
        finally:
            self.train(was_training)
        return tuple(t.double().numpy() for t in out)

    def sample(self, obs: FloatArray, rng: np.random.Generator) -> FloatArray:
        """Physical actions ``(B, A)`` drawn from π(·|s) with ``rng``."""
        return common.hurdle_sample(*self.params(obs), rng, space=self.space)

    def mode(self, obs: FloatArray) -> FloatArray:
        """Deterministic actions ``(B, A)``: heaviest component, 0 where P(a=0) ≥ ½, else the median amount."""
        return common.hurdle_mode(*self.params(obs), space=self.space)


class SavedPolicy:
    """A trained :class:`HurdleActor` (or, for a discrete action column, a
    :class:`ogsrl.agents.categorical.CategoricalActor`) served as an :class:`ogsrl.policy.StochasticPolicy`.

    ``act(obs, rng)``: with ``act_mode`` sample, a draw from π using ``rng`` (or, when ``rng`` is None, the policy's
    own generator seeded by ``sample_seed``); with ``act_mode`` mode, the deterministic mode whatever ``rng`` is.
    ``log_prob`` is the density of what ``act`` draws, so it is only defined for act_mode sample.
    """

    kind = ACTOR_KIND

    def __init__(self, actor: HurdleActor | CategoricalActor, feature_names: Sequence[str], act_mode: ActMode = "sample",
                 provenance: dict[str, Any] | None = None, sample_seed: int = 0) -> None:
        if act_mode not in ACT_MODES:
            raise ValueError(f"act_mode must be one of {list(ACT_MODES)}, got {act_mode!r}")
        if actor.obs_mean.shape[0] != len(feature_names):
            raise ValueError(f"actor reads {actor.obs_mean.shape[0]} features, got {len(feature_names)} names")
        self.actor = actor.eval()
        self.feature_names = tuple(feature_names)
        self.act_mode: ActMode = act_mode
        self.provenance = dict(provenance or {})
        self.sample_seed = int(sample_seed)
        self._rng = np.random.default_rng(self.sample_seed)

    def _obs(self, obs: Any) -> np.ndarray:
        return common.check_obs(obs, self.feature_names, "policy")

    def with_serving(self, act_mode: ActMode, provenance: dict[str, Any], sample_seed: int) -> SavedPolicy:
        """The same actor with the stage's act_mode, provenance and sampling seed."""
        return SavedPolicy(self.actor, self.feature_names, act_mode, provenance, sample_seed)

    def sample(self, obs: FloatArray, rng: np.random.Generator) -> FloatArray:
        """Physical actions ``(B, A)`` drawn from π with ``rng`` (whatever act_mode is)."""
        return self.actor.sample(self._obs(obs), rng)

    def act(self, obs: FloatArray, rng: np.random.Generator | None = None) -> FloatArray:
        """Actions ``(B, A)`` in physical units, following ``act_mode`` (see the class docstring)."""
        x = self._obs(obs)
        if self.act_mode == "mode":
            return self.actor.mode(x)
        return self.actor.sample(x, rng if rng is not None else self._rng)

    def log_prob(self, obs: FloatArray, actions: FloatArray) -> FloatArray:
        """``log π(a|s)`` per row ``(B,)`` w.r.t. (δ0 + Lebesgue) per dimension, physical units."""
        if self.act_mode != "sample":
            raise ValueError("a policy served with act_mode 'mode' is deterministic and has no density; "
                             "importance sampling needs act_mode 'sample'")
        x = self._obs(obs)
        if isinstance(self.actor, CategoricalActor):
            return self.actor.log_prob_np(x, actions)
        acts = common.check_actions(actions, x.shape[0], "policy", self.actor.space)
        return common.hurdle_log_prob(*self.actor.params(x), acts, space=self.actor.space)

    @property
    def action_columns(self) -> tuple[str, ...]:
        """the action columns this policy acts on, in order"""
        return self.actor.space.columns

    def save(self, path: str | Path) -> None:
        """Write the checkpoint directory (config.json + weights.pt: actor weights and normaliser only)."""
        space = self.actor.space
        if isinstance(space, common.DiscreteSpace):
            act_doc: dict[str, Any] = {"action_type": "discrete", "action_columns": [space.column],
                                       "n_actions": space.n, "action_labels": list(space.labels)}
        else:
            act_doc = {"action_columns": list(space.columns), "action_max": list(space.max),
                       "action_resolution": list(space.resolution),
                       **({} if space == common.CANONICAL_SPACE else {"action_units": list(space.units)})}
        doc = {
            "kind": ACTOR_KIND,
            "feature_names": list(self.feature_names),
            **act_doc,
            "act_mode": self.act_mode,
            "sample_seed": self.sample_seed,
            "actor": {"hidden": list(self.actor.hidden), "components": self.actor.k},
            "provenance": self.provenance,
        }
        state = {k: v.detach().clone() for k, v in self.actor.state_dict().items()}
        common.save_checkpoint(path, doc, state)

    @classmethod
    def load(cls, path: str | Path) -> SavedPolicy:
        """Rebuild a policy saved by :meth:`save` (weights read with ``weights_only=True``)."""
        doc = common.read_checkpoint_config(path)
        if doc["kind"] != ACTOR_KIND:
            raise ValueError(f"{path}: checkpoint kind {doc['kind']!r} is not {ACTOR_KIND!r}")
        names = tuple(doc["feature_names"])
        arch = doc["actor"]
        actor: HurdleActor | CategoricalActor
        if doc.get("action_type") == "discrete":
            cols, labels = doc.get("action_columns"), doc.get("action_labels")
            if not (isinstance(cols, list) and len(cols) == 1 and isinstance(labels, list)
                    and len(labels) == doc.get("n_actions")):
                raise ValueError(f"{path}: checkpoint discrete action column/labels are inconsistent")
            actor = CategoricalActor(len(names), tuple(arch["hidden"]), torch.Generator(),
                                     common.DiscreteSpace(cols[0], int(doc["n_actions"]), tuple(labels)))
        else:
            actor = HurdleActor(len(names), tuple(arch["hidden"]), int(arch["components"]), torch.Generator(),
                                _space_of(doc, path))
        actor.load_state_dict(common.read_checkpoint_tensors(path))
        return cls(actor, names, doc["act_mode"], doc.get("provenance"), int(doc.get("sample_seed", 0)))


def _space_of(doc: dict[str, Any], path: str | Path) -> common.ActionSpace:
    """The action space a checkpoint's config.json records: canonical without ``action_units``, else declared."""
    cols, amax, res = doc.get("action_columns"), doc.get("action_max"), doc.get("action_resolution")
    if "action_units" not in doc:
        if (cols != list(features.ACTIONS) or not np.array_equal(amax, common.ACTION_MAX)
                or not np.array_equal(res, common.ACTION_RESOLUTION)):
            raise ValueError(f"{path}: checkpoint action columns/bounds differ from ogsrl.features")
        return common.CANONICAL_SPACE
    units = doc["action_units"]
    if not (isinstance(cols, list) and isinstance(amax, list) and isinstance(res, list) and isinstance(units, list)
            and len(cols) == len(amax) == len(res) == len(units) > 0):
        raise ValueError(f"{path}: checkpoint action columns/bounds/units are inconsistent")
    return common.ActionSpace(tuple(cols), tuple(float(x) for x in amax), tuple(float(x) for x in res),
                              tuple(units))


def _union(*groups: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for g in groups:
        out.extend(n for n in g if n not in out)
    return tuple(out)


class GuardedPolicy:
    """``policy`` with the guardian's fallback to ``fallback`` (see the module docstring for the density).

    ``feature_names`` is the ordered union of the policy's, the fallback's and the guardian's state columns;
    ``act_mode`` is the policy's (the fallback must have the same one).
    """

    kind = GUARDED_KIND

    def __init__(self, policy: SavedPolicy | BinnedPolicy, fallback: SavedPolicy, guardian: Any, guardian_dir: Path | None = None,
                 mc_samples: int = 256, mc_seed: int = 0) -> None:
        if mc_samples < 1:
            raise ValueError(f"mc_samples must be ≥ 1, got {mc_samples}")
        if fallback.act_mode != policy.act_mode:
            raise ValueError(f"fallback act_mode {fallback.act_mode!r} differs from the policy's {policy.act_mode!r}")
        self.action_columns: tuple[str, ...] = tuple(getattr(policy, "action_columns", features.ACTIONS))
        g_state = [n for n in guardian.feature_names if n not in self.action_columns]
        self.policy, self.fallback, self.guardian = policy, fallback, guardian
        self.guardian_dir = guardian_dir
        self.mc_samples, self.mc_seed = int(mc_samples), int(mc_seed)
        self.act_mode = policy.act_mode
        self.provenance = dict(policy.provenance)
        self.feature_names = _union(policy.feature_names, fallback.feature_names, g_state)
        self._rng = np.random.default_rng(policy.sample_seed)

    def _cols(self, x: np.ndarray, names: Sequence[str]) -> np.ndarray:
        return x[:, [self.feature_names.index(n) for n in names]]

    def inside(self, obs: FloatArray, actions: FloatArray) -> np.ndarray:
        """``(B,)`` True where the guardian accepts (s, a); ``obs`` has columns ``feature_names``."""
        x = np.asarray(obs, dtype=np.float64)
        cols = {**{n: x[:, j] for j, n in enumerate(self.feature_names)},
                **{a: np.asarray(actions, dtype=np.float64)[:, j] for j, a in enumerate(self.action_columns)}}
        return np.asarray(self.guardian.contains(np.column_stack([cols[n] for n in self.guardian.feature_names])),
                          dtype=bool)

    def act(self, obs: FloatArray, rng: np.random.Generator | None = None) -> FloatArray:
        """The policy's action where the guardian accepts it, else the fallback's (both follow act_mode)."""
        x = common.check_obs(obs, self.feature_names, "guarded policy")
        rng = rng if rng is not None else self._rng
        act = self.policy.act(self._cols(x, self.policy.feature_names), rng)
        out = ~self.inside(x, act)
        if out.any():
            act[out] = self.fallback.act(self._cols(x[out], self.fallback.feature_names), rng)
        return act

    def prob_outside(self, obs: FloatArray) -> FloatArray:
        """Monte-Carlo estimate ``(B,)`` of P_π((s, a) outside | s): ``mc_samples`` draws per distinct state from π
        with a generator seeded by ``mc_seed`` (the same estimate on every call with the same ``obs``); drawn in
        chunks of about ``MC_CHUNK`` actions to bound memory."""
        x = common.check_obs(obs, self.feature_names, "guarded policy")
        uniq, inverse = np.unique(x, axis=0, return_inverse=True)
        rng = np.random.default_rng(self.mc_seed)
        out = np.empty(len(uniq))
        rows = max(1, MC_CHUNK // self.mc_samples)
        for start in range(0, len(uniq), rows):
            u = uniq[start : start + rows]
            rep = np.repeat(u, self.mc_samples, axis=0)  # (b, S) → (b·M, S), each state's draws contiguous
            a = self.policy.sample(self._cols(rep, self.policy.feature_names), rng)
            out[start : start + rows] = (~self.inside(rep, a)).reshape(len(u), self.mc_samples).mean(axis=1)
        return out[inverse.reshape(-1)]

    def log_prob(self, obs: FloatArray, actions: FloatArray) -> FloatArray:
        """``log π_g(a|s)`` per row ``(B,)`` (module docstring)."""
        if self.act_mode != "sample":
            raise ValueError("a policy served with act_mode 'mode' is deterministic and has no density; "
                             "importance sampling needs act_mode 'sample'")
        x = common.check_obs(obs, self.feature_names, "guarded policy")
        space = self.fallback.actor.space
        acts = (np.asarray(actions, dtype=np.float64).reshape(-1, 1) if isinstance(space, common.DiscreteSpace)
                else common.check_actions(actions, x.shape[0], "guarded policy", space))
        lp = self.policy.log_prob(self._cols(x, self.policy.feature_names), acts)
        lp_fb = self.fallback.log_prob(self._cols(x, self.fallback.feature_names), acts)
        p_out = self.prob_outside(x)
        with np.errstate(divide="ignore"):
            a = np.where(self.inside(x, acts), lp, -np.inf)
            b = np.log(p_out) + lp_fb
        return np.logaddexp(a, b)

    def save(self, path: str | Path, guardian_dir: Path | None = None) -> None:
        """Write a self-contained directory: config.json, ``policy/``, ``fallback/`` and ``guardian/`` (a copy of
        the guardian's saved directory, ``guardian_dir`` or the one it was loaded from)."""
        src = guardian_dir if guardian_dir is not None else self.guardian_dir
        if src is None or not Path(src).is_dir():
            raise ValueError(f"GuardedPolicy.save needs the guardian's saved directory, got {src}")
        doc = {"kind": GUARDED_KIND, "mc_samples": self.mc_samples, "mc_seed": self.mc_seed,
               "act_mode": self.act_mode, "feature_names": list(self.feature_names), "provenance": self.provenance}
        with atomic_path(path) as tmp:
            tmp.mkdir(parents=True)
            self.policy.save(tmp / "policy")
            self.fallback.save(tmp / "fallback")
            shutil.copytree(src, tmp / "guardian")
            common.write_checkpoint_config(tmp, doc)

    @classmethod
    def load(cls, path: str | Path) -> GuardedPolicy:
        """Rebuild a guarded policy saved by :meth:`save`."""
        from ogsrl import guardian as guardian_mod

        path = Path(path)
        doc = common.read_checkpoint_config(path)
        if doc["kind"] != GUARDED_KIND:
            raise ValueError(f"{path}: checkpoint kind {doc['kind']!r} is not {GUARDED_KIND!r}")
        pol = cls(load_policy(path / "policy"), SavedPolicy.load(path / "fallback"),
                  guardian_mod.load(path / "guardian"), path / "guardian", int(doc["mc_samples"]), int(doc["mc_seed"]))
        if list(pol.feature_names) != doc["feature_names"]:
            raise ValueError(f"{path}: feature_names differ from config.json")
        return pol


POLICY_LOADERS: dict[str, Callable[[str | Path], Any]] = {
    ACTOR_KIND: SavedPolicy.load,
    GUARDED_KIND: GuardedPolicy.load,
    BINNED_KIND: BinnedPolicy.load,
}
"""checkpoint kind → loader"""


def load_policy(path: str | Path) -> SavedPolicy | GuardedPolicy | BinnedPolicy:
    """Load any saved policy directory by the ``kind`` in its config.json."""
    kind = common.read_checkpoint_config(path)["kind"]
    if kind not in POLICY_LOADERS:
        raise ValueError(f"{path}: unknown policy kind {kind!r}; known: {sorted(POLICY_LOADERS)}")
    return POLICY_LOADERS[kind](path)

