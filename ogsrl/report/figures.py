"""The report's figures: matplotlib (Agg) → SVG text, deterministic (fixed hash salt, no date), text kept as text.

Each function takes tidy tables from :mod:`ogsrl.report.inputs` and returns a finished figure's SVG (or None when
its input is absent); :func:`svg` turns a figure into markup that can be inlined in HTML or saved as a file.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Collection, Mapping

import numpy as np
import pandas as pd

_RC = {"svg.fonttype": "none", "svg.hashsalt": "ogsrl-report", "font.size": 9, "axes.grid": True,
       "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False, "font.family": "DejaVu Sans"}


def _plt():  # noqa: ANN202 - pyplot module
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def svg(fig) -> str:  # noqa: ANN001 - matplotlib Figure
    """SVG markup of ``fig`` without the XML prolog, DOCTYPE and metadata (closes the figure)."""
    plt = _plt()
    buf = io.StringIO()
    with plt.rc_context(_RC):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    text = re.sub(r"<\?xml[^>]*\?>\s*", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>\s*", "", text)
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    return re.sub(r"<!--.*?-->\s*", "", text, flags=re.S).strip()


def _figure(ncols: int = 1, width: float = 6.4, height: float = 3.6):  # noqa: ANN202
    plt = _plt()
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    return fig, axes[0]


def value_axis(truth: np.ndarray, value: np.ndarray, ess: np.ndarray, min_ess: float) -> tuple[float, float]:
    """Limits of the estimate axis: the true values and the estimates resting on at least ``min_ess`` effective
    stays (an unknown ESS counts as enough), padded by 10 % of their span. Estimates on fewer stays — importance
    weights that explode at ESS ≈ 1 — are left to run off the axis instead of squeezing every other point flat."""
    enough = ~(np.asarray(ess, dtype=float) < min_ess)
    span = np.r_[np.asarray(truth, dtype=float), np.asarray(value, dtype=float)[enough]]
    span = span[np.isfinite(span)]
    lo, hi = float(span.min()), float(span.max())
    pad = 0.1 * (hi - lo) or 0.1 * max(abs(hi), 1.0)
    return lo - pad, hi + pad


def ope_vs_truth(est: pd.DataFrame, truth: Mapping[str, Mapping[str, float]], target: str,
                 min_ess: float = 0.0, outside: Collection[str] = ()) -> str | None:
    """Estimate (with its CI) against the simulator's true value, one marker per estimator, one point per policy;
    None when no policy has a true value for ``target``. Estimates with ESS below ``min_ess`` (those the gate calls
    insufficient evidence) are drawn hollow and may lie off the axis (:func:`value_axis`); the title counts them.
    Policies in ``outside`` (beyond the support limit) are labelled so, in red."""
    from ogsrl.report.inputs import truth_of

    rows = est[est["target"] == target].copy()
    rows["truth"] = [truth_of(truth.get(p, {}), target) for p in rows["policy"]]
    rows = rows.dropna(subset=["truth", "value"])
    if rows.empty:
        return None
    ess = rows["ess"].astype(float) if "ess" in rows.columns else pd.Series(np.nan, index=rows.index)
    thin = (ess < min_ess).to_numpy()
    y_lo, y_hi = value_axis(rows["truth"].to_numpy(), rows["value"].to_numpy(), ess.to_numpy(), min_ess)
    off_scale = int(((rows["value"] < y_lo) | (rows["value"] > y_hi)).sum())
    plt = _plt()
    with plt.rc_context(_RC):
        fig, (ax,) = _figure(width=6.0, height=4.2)
        markers = "osD^vP*Xh<>"
        for i, (name, g) in enumerate(rows.groupby("estimator", sort=True)):
            lo = (g["value"] - g["ci_low"]).clip(lower=0).fillna(0)
            hi = (g["ci_high"] - g["value"]).clip(lower=0).fillna(0)
            jitter = (i - rows["estimator"].nunique() / 2) * 0.004 * (np.ptp(rows["truth"]) or 1.0)
            bars = ax.errorbar(g["truth"] + jitter, g["value"], yerr=[lo, hi], fmt=markers[i % len(markers)], ms=5,
                               capsize=2, label=name, alpha=0.85)
            hollow = thin[rows.index.get_indexer(g.index)]
            if hollow.any():
                ax.plot((g["truth"] + jitter)[hollow], g["value"][hollow], markers[i % len(markers)], ms=5,
                        mfc="white", mec=bars.lines[0].get_color())
        ends = [max(y_lo, float(rows["truth"].min())), min(y_hi, float(rows["truth"].max()))]
        ax.plot(ends, ends, color="grey", lw=1, ls="--", label="y = x")
        for p, g in rows.groupby("policy"):
            ax.annotate(p.replace("/seed", " s") + (OUTSIDE_LABEL if p in outside else ""),
                        (g["truth"].iloc[0], min(g["value"].max(), y_hi)), fontsize=7, xytext=(3, 4),
                        textcoords="offset points", color="#b3261e" if p in outside else "#444")
        ax.set_ylim(y_lo, y_hi)
        ax.set_xlabel(f"true {target} (simulator)")
        ax.set_ylabel(f"OPE estimate of {target} (95 % CI)")
        ax.legend(fontsize=7, loc="best")
        note = f"; hollow: ESS < {min_ess:g}" if thin.any() else ""
        note += f"; {off_scale} off the axis" if off_scale else ""
        ax.set_title(f"OPE against truth: {target}{note}", fontsize=9 if note else None)
    return svg(fig)


OUTSIDE_LABEL = " (outside support)"
"""appended to the label of a policy beyond the support limit"""


def estimates_forest(est: pd.DataFrame, target: str, outside: Collection[str] = ()) -> str | None:
    """Estimates with CIs per policy and estimator (when no truth is known); policies in ``outside`` labelled so."""
    rows = est[est["target"] == target].dropna(subset=["value"])
    if rows.empty:
        return None
    plt = _plt()
    with plt.rc_context(_RC):
        fig, (ax,) = _figure(width=6.4, height=0.35 * len(rows) + 1.2)
        labels = [f"{p}{OUTSIDE_LABEL if p in outside else ''} · {e}" for p, e in zip(rows["policy"],
                                                                                       rows["estimator"])]
        y = np.arange(len(rows))
        ax.errorbar(rows["value"], y, xerr=[(rows["value"] - rows["ci_low"]).clip(lower=0).fillna(0),
                                            (rows["ci_high"] - rows["value"]).clip(lower=0).fillna(0)],
                    fmt="o", ms=4, capsize=2)
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_xlabel(f"OPE estimate of {target} (95 % CI)")
        ax.set_title(f"OPE estimates: {target}")
    return svg(fig)


def learning_curves(curves: pd.DataFrame | None) -> str | None:
    """Training curves per run and seed: BC's validation NLL by epoch; the on-policy learners' reward return and
    total cost return by iteration (columns that are absent or empty are skipped)."""
    if curves is None or "run" not in curves.columns:
        return None
    panels = [(c, lab) for c, lab in (("loss/val_nll", "validation NLL (behaviour cloning)"),
                                      ("reward_return", "reward return in the model"))
              if c in curves.columns and curves[c].notna().any()]
    costs = [c for c in curves.columns if c.startswith("cost_return/") and curves[c].notna().any()]
    if costs:
        panels.append(("__cost__", "cost return in the model"))
    if not panels:
        return None
    plt = _plt()
    with plt.rc_context(_RC):
        fig, axes = _figure(ncols=len(panels), width=4.0 * len(panels), height=3.2)
        for ax, (col, title) in zip(axes, panels):
            for (run, seed), g in curves.groupby(["run", "seed"], sort=True):
                if col == "__cost__":
                    vals = g[costs].sum(axis=1, min_count=1)
                else:
                    vals = g[col]
                ok = vals.notna()
                if ok.any():
                    ax.plot(g.loc[ok, "step"], vals[ok], lw=1.4, label=f"{run} s{seed}")
            ax.set_title(title)
            ax.set_xlabel("epoch / iteration")
            ax.legend(fontsize=7)
    return svg(fig)


def world_calibration(calib: pd.DataFrame | None, learning: pd.DataFrame | None) -> str | None:
    """World model: predictive-interval coverage against the nominal level (ensemble and baselines), and its
    train/validation loss by epoch."""
    if calib is None and learning is None:
        return None
    plt = _plt()
    with plt.rc_context(_RC):
        n = (calib is not None) + (learning is not None)
        fig, axes = _figure(ncols=n, width=4.2 * n, height=3.4)
        k = 0
        if calib is not None and "nominal" in calib.columns:
            ax = axes[k]
            k += 1
            for col in calib.columns.drop("nominal"):
                ax.plot(calib["nominal"], calib[col], marker="o", ms=3, lw=1.4, label=col)
            ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="ideal")
            ax.set_xlabel("nominal coverage")
            ax.set_ylabel("empirical coverage (test)")
            ax.set_title("calibration of predictive intervals")
            ax.legend(fontsize=7)
        if learning is not None and "step" in learning.columns:
            ax = axes[k]
            for col in learning.columns.drop("step"):
                ax.plot(learning["step"], learning[col], lw=1.4, label=col)
            ax.set_xlabel("epoch")
            ax.set_title("ensemble loss")
            ax.legend(fontsize=7)
    return svg(fig)


def mortality_relation(curve: pd.DataFrame | None, points: Mapping[str, tuple[float, float]]) -> str | None:
    """The fitted return → mortality relation of the test split, with each policy's (estimated return, ME)."""
    if curve is None or not {"return", "mortality"} <= set(curve.columns):
        return None
    plt = _plt()
    with plt.rc_context(_RC):
        fig, (ax,) = _figure(width=6.0, height=3.6)
        ax.plot(curve["return"], curve["mortality"], color="#555", lw=1.5, label="m̂(return), isotonic fit")
        for label, (g, me) in points.items():
            if math.isfinite(g) and math.isfinite(me):
                ax.plot([g], [me], "o", ms=6, label=label)
        ax.set_xlabel("stay return")
        ax.set_ylabel("in-hospital mortality")
        ax.set_title("ME: mortality expected for a return (test split)")
        ax.legend(fontsize=7)
    return svg(fig)
