"""A tiny tabular MDP with exact values, shared by the FQE and DR tests.

State x ∈ {0, 1} (one feature), horizon H = 3 steps, action = a fluid dose, 0 or 500 mL (vasopressor 0). Giving fluid
moves the patient to x' = 1, withholding it to x' = 0 (deterministic). Reward r = x + 1[fluid] − 0.5; cost c = 1[x=0].
π_e gives fluid with probability p(x) = (0.3, 0.8); the behaviour policy with probability ½ in both states.
"""

from __future__ import annotations

import numpy as np

H = 3
P_E = np.array([0.3, 0.8])
DOSE = 500.0


def exact_q() -> tuple[np.ndarray, np.ndarray]:
    """Q[t, x, g] and V[t, x] (g: fluid given) for targets (reward, cost), each (H, 2, 2, 2) / (H, 2, 2)."""
    q = np.zeros((H + 1, 2, 2, 2))
    v = np.zeros((H + 1, 2, 2))
    for t in range(H - 1, -1, -1):
        for x in (0, 1):
            for g in (0, 1):
                q[t, x, g] = np.array([x + g - 0.5, float(x == 0)]) + v[t + 1, g]
            v[t, x] = (1 - P_E[x]) * q[t, x, 0] + P_E[x] * q[t, x, 1]
    return q[:H], v[:H]


def logged(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` stays under the behaviour policy, rows sorted by stay and step; x_0 ~ Bernoulli(½)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, n)
    rows: dict[str, list] = {k: [] for k in ("stay", "step", "x", "g", "r", "c")}
    for t in range(H):
        g = rng.integers(0, 2, n)
        for k, val in (("stay", np.arange(n)), ("step", np.full(n, t)), ("x", x), ("g", g),
                       ("r", x + g - 0.5), ("c", (x == 0).astype(float))):
            rows[k].append(val)
        x = g
    out = {k: np.stack(v, axis=1).reshape(-1) for k, v in rows.items()}  # stay-major: (n, H) → rows
    out["actions"] = np.column_stack([out["g"] * DOSE, np.zeros(len(out["g"]))])
    out["log_ratio"] = np.where(out["g"] == 1, np.log(P_E[out["x"]] / 0.5), np.log((1 - P_E[out["x"]]) / 0.5))
    return out


class TabularPolicy:
    """π_e as a served policy: ``act`` draws fluid with probability p(x)."""

    feature_names = ("x",)

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        give = rng.random(len(obs)) < P_E[np.asarray(obs, int)[:, 0]]
        return np.column_stack([give * DOSE, np.zeros(len(obs))])
