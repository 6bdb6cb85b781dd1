"""Promotion gate: decide whether a registered candidate policy may become the `champion`.

The decision is a pure function of the candidate's evidence (validation, guardian certificate, OPE estimates) and
the current champion's return estimate; :func:`apply_decision` then writes it to the MLflow registry as aliases and
tags. A candidate is promoted only when every check passes:

* ``validation``  — every required validation report exists and says ``success: true``;
* ``guardian``    — when a guardian was bundled: its certificate counts stays, and the mean per-stay test coverage
  ≥ α_c − slack (slack 0 by default: the stay-level threshold targets a pooled coverage above α_c, so a shortfall on
  test is a real failure, not noise; the reason states the margin);
* ``cost:<name>`` — OPE upper CI of each cost return ≤ its limit in params (a limit without an estimate fails);
* ``return``      — OPE lower CI of the reward return ≥ the champion's point estimate (passes with no champion).

Each check states its margin (how far the compared number is on the passing side; negative: failed by that much).
An OPE check whose estimate has an effective sample size below ``min_ess`` decides nothing: the estimate rests on a
handful of stays and its interval on noise. Then the outcome is **insufficient evidence** (distinct from reject: the
candidate stays `challenger`, nothing changes, and the summary says so), unless another check already rejects on its
own merits (a failed validation or guardian certificate).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ogsrl.ope.estimate import Estimate

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_PREFIX = "gate."
Outcome = Literal["promote", "reject", "insufficient_evidence"]


@dataclass(frozen=True, slots=True)
class GateConfig:
    """Thresholds of the promotion gate (params `registry.gate`)."""

    cost_limits: Mapping[str, float] = field(default_factory=lambda: {"cost_total": 1.0})
    """per cost column: the largest allowed OPE upper CI of its (discounted) return"""
    guardian_coverage_slack: float = 0.0
    """guardian passes when the certificate's per-stay test coverage ≥ α_c − slack"""
    validation_reports: tuple[str, ...] = (
        "data/reports/validation_raw.json",
        "data/reports/validation_trajectories.json",
    )
    """validation reports (relative to the project root) that must exist and say success: true"""
    min_ess: float = 20.0
    """an OPE estimate whose effective sample size (Kish ESS of the importance weights) is below this decides
    nothing: the outcome is insufficient evidence (0: never)"""

    def __post_init__(self) -> None:
        if not self.cost_limits:
            raise ValueError("cost_limits must name at least one cost (e.g. cost_total)")
        for name, limit in self.cost_limits.items():
            if not math.isfinite(limit):
                raise ValueError(f"cost_limits.{name} must be finite, got {limit}")
        if not 0.0 <= self.guardian_coverage_slack < 1.0:
            raise ValueError(f"guardian_coverage_slack must be in [0, 1), got {self.guardian_coverage_slack}")
        if not (math.isfinite(self.min_ess) and self.min_ess >= 0):
            raise ValueError(f"min_ess must be a finite number ≥ 0, got {self.min_ess}")


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything the gate looks at for one candidate, gathered at registration."""

    validation: Mapping[str, bool | None]
    """report path → its success flag (None when the report is missing)"""
    ope_return: Estimate | None
    """OPE estimate of the candidate's reward return (None when missing)"""
    ope_costs: Mapping[str, Estimate]
    """cost column → OPE estimate of the candidate's cost return"""
    guardian_alpha: float | None = None
    """certificate target coverage α_c (None when no guardian is bundled)"""
    guardian_coverage: float | None = None
    """certificate empirical test coverage, per stay when the certificate counts stays (None without a guardian)"""
    guardian_unit: str | None = None
    """calibration unit of the certificate: stay | row (None: not recorded)"""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored with the model version)."""

        def iv(x: Estimate | None) -> dict[str, float] | None:
            return None if x is None else x.to_dict()

        return {
            "validation": dict(self.validation),
            "ope_return": iv(self.ope_return),
            "ope_costs": {k: iv(v) for k, v in self.ope_costs.items()},
            "guardian_alpha": self.guardian_alpha,
            "guardian_coverage": self.guardian_coverage,
            "guardian_unit": self.guardian_unit,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Evidence:
        """Inverse of :meth:`to_dict`."""

        def iv(x: Mapping[str, Any] | None) -> Estimate | None:
            return None if x is None else Estimate.from_dict(x)  # ess NaN in evidence recorded before it existed

        costs = {k: iv(v) for k, v in dict(d.get("ope_costs") or {}).items()}
        return cls(
            validation=dict(d.get("validation") or {}),
            ope_return=iv(d.get("ope_return")),
            ope_costs={k: v for k, v in costs.items() if v is not None},
            guardian_alpha=d.get("guardian_alpha"),
            guardian_coverage=d.get("guardian_coverage"),
            guardian_unit=d.get("guardian_unit"),
        )


@dataclass(frozen=True, slots=True)
class Check:
    """One gate check and why it passed or failed."""

    name: str
    """check id: validation, guardian, cost:<name>, return"""
    passed: bool
    """whether the check passed"""
    reason: str
    """human-readable explanation with the numbers compared"""
    margin: float | None = None
    """how far the compared number lies on the passing side (negative: failed by that much; None: not numeric)"""
    insufficient: bool = False
    """the estimate's effective sample size is below min_ess: the check decides nothing"""


@dataclass(frozen=True, slots=True)
class Decision:
    """The gate's verdict on one candidate."""

    promote: bool
    """True when every check passed"""
    checks: tuple[Check, ...]
    """all checks, in evaluation order"""

    @property
    def failed(self) -> tuple[Check, ...]:
        """The checks that failed (insufficient ones included)."""
        return tuple(c for c in self.checks if not c.passed)

    @property
    def outcome(self) -> Outcome:
        """promote; reject (a check failed on its numbers); insufficient_evidence (no check failed on its numbers,
        but an OPE estimate's effective sample size is below min_ess)."""
        if self.promote:
            return "promote"
        return "reject" if any(not c.insufficient for c in self.failed) else "insufficient_evidence"

    def summary(self) -> str:
        """One line: the verdict and the failed checks' reasons."""
        if self.promote:
            return "PROMOTE: all checks passed (" + "; ".join(f"{c.name}: {c.reason}" for c in self.checks) + ")"
        head = "REJECT: " if self.outcome == "reject" else "INSUFFICIENT EVIDENCE (no decision): "
        return head + "; ".join(f"{c.name}: {c.reason}" for c in self.failed)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "promote": self.promote,
            "outcome": self.outcome,
            "summary": self.summary(),
            "checks": [{"name": c.name, "passed": c.passed, "reason": c.reason, "margin": c.margin,
                        "insufficient": c.insufficient} for c in self.checks],
        }


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _with_ess(check: Check, est: Estimate, min_ess: float) -> Check:
    """``check`` unchanged when ``est``'s ESS ≥ min_ess, else an undecided (insufficient) check."""
    if min_ess <= 0 or (math.isfinite(est.ess) and est.ess >= min_ess):
        return check
    ess = f"{est.ess:.1f}" if math.isfinite(est.ess) else "unknown"
    return Check(check.name, False, f"effective sample size {ess} < min_ess {min_ess:g}: undecided "
                 f"({check.reason})", check.margin, insufficient=True)


def decide(evidence: Evidence, cfg: GateConfig, champion_return: float | None) -> Decision:
    """Apply every gate check to a candidate.

    Args:
        evidence: the candidate's evidence.
        cfg: gate thresholds.
        champion_return: the current champion's OPE point estimate of the reward return (None: no champion).

    Returns:
        The decision; ``promote`` ⇔ all checks pass.
    """
    checks: list[Check] = []

    # validation: every required report present and successful
    missing = [p for p in cfg.validation_reports if evidence.validation.get(p) is None]
    failed = [p for p in cfg.validation_reports if evidence.validation.get(p) is False]
    if missing or failed:
        parts = ([f"missing report(s) {missing}"] if missing else []) + (
            [f"failed report(s) {failed}"] if failed else []
        )
        checks.append(Check("validation", False, "; ".join(parts)))
    else:
        checks.append(Check("validation", True, f"{len(cfg.validation_reports)} report(s) passed"))

    # guardian certificate (only when a guardian is bundled)
    if evidence.guardian_alpha is None and evidence.guardian_coverage is None:
        checks.append(Check("guardian", True, "no guardian bundled (check skipped)"))
    elif not (_finite(evidence.guardian_alpha) and _finite(evidence.guardian_coverage)):
        checks.append(Check("guardian", False, "guardian certificate lacks alpha_c or test coverage"))
    elif evidence.guardian_unit == "row":
        checks.append(Check("guardian", False, "certificate calibrated by rows, which are dependent within a stay: "
                            "its guarantee does not hold (recalibrate with guardian.calibration.unit: stay)"))
    else:
        need = float(evidence.guardian_alpha) - cfg.guardian_coverage_slack  # type: ignore[arg-type]
        cov = float(evidence.guardian_coverage)  # type: ignore[arg-type]
        ok = cov >= need
        per = " per stay" if evidence.guardian_unit == "stay" else ""
        slack = f" - slack {cfg.guardian_coverage_slack:.4f} = {need:.4f}" if cfg.guardian_coverage_slack else ""
        checks.append(Check(
            "guardian", ok,
            f"test coverage{per} {cov:.4f} {'≥' if ok else '<'} alpha_c {evidence.guardian_alpha:.4f}{slack} "
            f"(margin {cov - need:+.4f})", cov - need,
        ))

    # cost limits: OPE upper CI of every limited cost
    for name, limit in cfg.cost_limits.items():
        est = evidence.ope_costs.get(name)
        if est is None or not _finite(est.ci_high):
            checks.append(Check(f"cost:{name}", False, f"no finite OPE estimate for {name} (limit {limit:g})"))
            continue
        ok = est.ci_high <= limit
        margin = limit - est.ci_high
        text = f"upper CI {est.ci_high:.4g} {'≤' if ok else '>'} limit {limit:.4g} (margin {margin:+.4g})"
        checks.append(_with_ess(Check(f"cost:{name}", ok, text, margin), est, cfg.min_ess))

    # return: OPE lower CI ≥ champion's point estimate
    est = evidence.ope_return
    if est is None or not _finite(est.ci_low):
        checks.append(Check("return", False, "no finite OPE estimate of the reward return"))
    elif champion_return is None:
        checks.append(_with_ess(Check("return", True, f"no champion yet (candidate lower CI {est.ci_low:.4g})"),
                                est, cfg.min_ess))
    else:
        ok = est.ci_low >= champion_return
        margin = est.ci_low - champion_return
        text = (f"lower CI {est.ci_low:.4g} {'≥' if ok else '<'} champion estimate {champion_return:.4g} "
                f"(margin {margin:+.4g})")
        checks.append(_with_ess(Check("return", ok, text, margin), est, cfg.min_ess))

    decision = Decision(all(c.passed for c in checks), tuple(checks))
    return decision


def decision_tags(decision: Decision) -> dict[str, str]:
    """The model-version tags that record a decision (values are strings, as MLflow requires)."""
    label = {"promote": "promoted", "reject": "rejected", "insufficient_evidence": "insufficient_evidence"}
    tags = {f"{TAG_PREFIX}decision": label[decision.outcome],
            f"{TAG_PREFIX}summary": decision.summary()[:4900]}
    for c in decision.checks:
        key = c.name.replace(":", ".")
        tags[f"{TAG_PREFIX}check.{key}"] = "pass" if c.passed else ("undecided" if c.insufficient else "fail")
        tags[f"{TAG_PREFIX}reason.{key}"] = c.reason[:4900]
    return tags


def apply_decision(client: Any, model_name: str, version: str, decision: Decision) -> None:
    """Record a decision in the registry: tags on the version; on promotion move `champion` to it.

    The `challenger` alias stays on a rejected candidate and is removed from a promoted one. Nothing about the
    current champion changes unless the candidate is promoted.

    Args:
        client: an ``mlflow.MlflowClient``.
        model_name: registered model name.
        version: the candidate's version.
        decision: the gate's verdict.
    """
    for key, value in decision_tags(decision).items():
        client.set_model_version_tag(model_name, version, key, value)
    for c in decision.checks:
        log.info("gate %s v%s %s %s: %s", model_name, version, c.name,
                 "PASS" if c.passed else ("UNDECIDED" if c.insufficient else "FAIL"), c.reason)
    if decision.promote:
        client.set_registered_model_alias(model_name, CHAMPION, version)
        aliases = client.get_model_version(model_name, version).aliases
        if CHALLENGER in aliases:
            client.delete_registered_model_alias(model_name, CHALLENGER)
        log.info("gate %s v%s promoted to %s", model_name, version, CHAMPION)
    else:
        log.info("gate %s v%s stays %s: %s", model_name, version, CHALLENGER, decision.summary())
