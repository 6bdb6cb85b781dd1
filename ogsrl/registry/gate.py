"""Promotion gate: decide whether a registered candidate policy may become the `champion`.

The decision is a pure function of the candidate's evidence (validation, guardian certificate, the candidate's own
support on test states, OPE estimates) and the comparison point (the current champion's return estimate on the
current test split, or without a champion the clinicians' logged return); :func:`apply_decision` then writes it to
the MLflow registry as aliases and tags. A candidate is promoted only when every check passes:

* ``validation``  — every required validation report exists and says ``success: true``;
* ``guardian``    — a certified guardian is bundled (none: fail), its certificate counts stays, and the mean per-stay
  test coverage ≥ α_c − slack;
* ``support``     — the share of the candidate's *own* actions (before any guardian fallback) on the test states that
  the bundled guardian rejects ≤ ``max_support_reject_share`` (a policy that lives outside the data is not served,
  whatever its OPE numbers say: they rest on the few stays where it agrees with the clinicians);
* ``cost:<name>`` — OPE upper CI of each cost return ≤ its limit in params (a limit without an estimate fails);
* ``return``      — with a champion: OPE lower CI of the candidate's reward return ≥ the champion's point estimate,
  both recomputed on the same current test split (superiority); without one: lower CI ≥ the clinicians' logged
  return − ``noninferiority_margin`` (non-inferiority to the care in the data, which is how the first champion,
  the clinician-equivalent baseline, is admitted).

Each check states its value, threshold and margin (how far the value lies on the passing side; negative: failed by
that much). Two things make a check decide nothing — outcome **insufficient evidence** (distinct from reject: the
candidate stays `challenger`, nothing changes, and the summary says so), unless another check rejects on its own:

* an OPE estimate whose effective sample size is below ``min_ess`` (its interval rests on a handful of stays);
* a margin inside the check's tolerance band ``|margin| < tolerance[<kind>]``: a number that close to its threshold
  flips with the seed or the machine (torch CPU kernels differ across machines, docs/reliability.md), so neither
  pass nor fail would mean anything.
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


TOLERANCE_KINDS = ("guardian", "support", "cost", "return")
"""check kinds a tolerance band can be set for (``cost`` applies to every ``cost:<name>``)"""


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
    max_support_reject_share: float = 0.10
    """support passes when the guardian rejects at most this share of the candidate's own (state, action) pairs on
    the test states (the certificate's nominal share for the clinicians' own pairs is 1 − α_c)"""
    noninferiority_margin: float = 8.0
    """without a champion, return passes when the candidate's lower CI ≥ the clinicians' logged return − this margin
    (return units)"""
    tolerance: Mapping[str, float] = field(default_factory=dict)
    """per check kind (guardian, support, cost, return): a margin with |margin| below this is undecided (missing: 0)"""

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
        if not 0.0 <= self.max_support_reject_share <= 1.0:
            raise ValueError(f"max_support_reject_share must be in [0, 1], got {self.max_support_reject_share}")
        if not (math.isfinite(self.noninferiority_margin) and self.noninferiority_margin >= 0):
            raise ValueError(f"noninferiority_margin must be a finite number ≥ 0, got {self.noninferiority_margin}")
        for kind, band in self.tolerance.items():
            if kind not in TOLERANCE_KINDS:
                raise ValueError(f"tolerance.{kind}: unknown check kind; known: {', '.join(TOLERANCE_KINDS)}")
            if not (math.isfinite(band) and band >= 0):
                raise ValueError(f"tolerance.{kind} must be a finite number ≥ 0, got {band}")

    def band(self, kind: str) -> float:
        """The tolerance band of a check kind (0 when not set)."""
        return float(self.tolerance.get(kind, 0.0))


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
    support_reject_share: float | None = None
    """share of the candidate's own (state, action) pairs on the test states that the bundled guardian rejects
    (None: not measured — no guardian, or no test split)"""
    logged_return: Estimate | None = None
    """the clinicians' logged (on-policy) return on the same test split (None when missing)"""
    return_estimator: str | None = None
    """the OPE estimator ``ope_return`` comes from (named in the return check's reason; None: not recorded)"""
    cost_estimator: str | None = None
    """the OPE estimator ``ope_costs`` come from (named in the cost checks' reasons; None: not recorded)"""

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
            "support_reject_share": self.support_reject_share,
            "logged_return": iv(self.logged_return),
            "return_estimator": self.return_estimator,
            "cost_estimator": self.cost_estimator,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Evidence:
        """Inverse of :meth:`to_dict`."""

        def iv(x: Mapping[str, Any] | None) -> Estimate | None:
            return None if x is None else Estimate.from_dict(x)  # ess NaN in evidence recorded before it existed

        costs = {k: iv(v) for k, v in dict(d.get("ope_costs") or {}).items()}
        share = d.get("support_reject_share")
        return cls(
            validation=dict(d.get("validation") or {}),
            ope_return=iv(d.get("ope_return")),
            ope_costs={k: v for k, v in costs.items() if v is not None},
            guardian_alpha=d.get("guardian_alpha"),
            guardian_coverage=d.get("guardian_coverage"),
            guardian_unit=d.get("guardian_unit"),
            support_reject_share=None if share is None else float(share),
            logged_return=iv(d.get("logged_return")),
            return_estimator=d.get("return_estimator"),
            cost_estimator=d.get("cost_estimator"),
        )


@dataclass(frozen=True, slots=True)
class Check:
    """One gate check and why it passed or failed."""

    name: str
    """check id: validation, guardian, support, cost:<name>, return"""
    passed: bool
    """whether the check passed"""
    reason: str
    """human-readable explanation with the numbers compared"""
    margin: float | None = None
    """how far the compared number lies on the passing side (negative: failed by that much; None: not numeric)"""
    insufficient: bool = False
    """the check decides nothing: an estimate's effective sample size below min_ess, or the margin inside the
    tolerance band"""
    value: float | None = None
    """the compared number (None: not numeric)"""
    threshold: float | None = None
    """what it is compared against (None: not numeric)"""

    @property
    def status(self) -> str:
        """PASS, FAIL or UNDECIDED."""
        return "PASS" if self.passed else ("UNDECIDED" if self.insufficient else "FAIL")

    def line(self) -> str:
        """One line: status, name, value, threshold, margin and reason."""
        nums = ""
        if self.value is not None and self.threshold is not None and self.margin is not None:
            nums = f" value {self.value:.4g}, threshold {self.threshold:.4g}, margin {self.margin:+.4g} —"
        return f"{self.status:<9} {self.name}:{nums} {self.reason}"


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
        but one is undecided: an effective sample size below min_ess, or a margin inside its tolerance band)."""
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
                        "value": c.value, "threshold": c.threshold, "insufficient": c.insufficient}
                       for c in self.checks],
        }


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _with_ess(check: Check, est: Estimate, min_ess: float) -> Check:
    """``check`` unchanged when ``est``'s ESS ≥ min_ess, else an undecided (insufficient) check."""
    if min_ess <= 0 or (math.isfinite(est.ess) and est.ess >= min_ess):
        return check
    ess = f"{est.ess:.1f}" if math.isfinite(est.ess) else "unknown"
    return Check(check.name, False, f"effective sample size {ess} < min_ess {min_ess:g}: undecided "
                 f"({check.reason})", check.margin, True, check.value, check.threshold)


def _with_band(check: Check, band: float) -> Check:
    """``check`` unchanged when its margin lies outside the tolerance band, else undecided."""
    if band <= 0 or check.margin is None or check.insufficient or abs(check.margin) >= band:
        return check
    return Check(check.name, False, f"margin {check.margin:+.4g} inside the tolerance band ±{band:g}: undecided "
                 f"({check.reason})", check.margin, True, check.value, check.threshold)


def _compare(name: str, value: float, threshold: float, at_most: bool, what: str, against: str = "") -> Check:
    """A numeric check ``value ≤ threshold`` (``at_most``) or ``value ≥ threshold`` with its margin; the reason
    reads ``<what> <value> ≤|≥|>|< <against> <threshold> (margin ±m)``."""
    ok = value <= threshold if at_most else value >= threshold
    margin = threshold - value if at_most else value - threshold
    sign = ("≤" if ok else ">") if at_most else ("≥" if ok else "<")
    against = f"{against} " if against else ""
    return Check(name, ok, f"{what} {value:.4g} {sign} {against}{threshold:.4g} (margin {margin:+.4g})", margin,
                 value=value, threshold=threshold)


def decide(evidence: Evidence, cfg: GateConfig, champion_return: float | None,
           candidate_return: Estimate | None = None) -> Decision:
    """Apply every gate check to a candidate.

    Args:
        evidence: the candidate's evidence.
        cfg: gate thresholds.
        champion_return: the current champion's OPE point estimate of the reward return on the current test split
            (None: no champion; the candidate is then compared with the clinicians' logged return).
        candidate_return: the candidate's estimate recomputed on that same split (None: ``evidence.ope_return``).

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

    # guardian certificate: required
    if evidence.guardian_alpha is None and evidence.guardian_coverage is None:
        checks.append(Check("guardian", False, "no certified guardian bundled: nothing vouches for the served "
                            "(state, action) pairs (run calibrate-guardian, then register again)"))
    elif not (_finite(evidence.guardian_alpha) and _finite(evidence.guardian_coverage)):
        checks.append(Check("guardian", False, "guardian certificate lacks alpha_c or test coverage"))
    elif evidence.guardian_unit == "row":
        checks.append(Check("guardian", False, "certificate calibrated by rows, which are dependent within a stay: "
                            "its guarantee does not hold (recalibrate with guardian.calibration.unit: stay)"))
    else:
        alpha = float(evidence.guardian_alpha)  # type: ignore[arg-type]
        need = alpha - cfg.guardian_coverage_slack
        per = " per stay" if evidence.guardian_unit == "stay" else ""
        against = f"alpha_c {alpha:.4f} - slack {cfg.guardian_coverage_slack:.4f} =" if cfg.guardian_coverage_slack \
            else "alpha_c"
        c = _compare("guardian", float(evidence.guardian_coverage), need, False,  # type: ignore[arg-type]
                     f"test coverage{per}", against)
        checks.append(_with_band(c, cfg.band("guardian")))

    # support: the candidate's own actions inside the guardian's set
    share = evidence.support_reject_share
    if not _finite(share):
        checks.append(Check("support", False, "no measurement of the candidate's own support (needs the bundled "
                            "guardian and the test split)"))
    else:
        c = _compare("support", float(share), cfg.max_support_reject_share, True,  # type: ignore[arg-type]
                     "guardian rejects a share of the candidate's own test actions")
        checks.append(_with_band(c, cfg.band("support")))

    # cost limits: OPE upper CI of every limited cost
    upper = f"{evidence.cost_estimator} upper CI" if evidence.cost_estimator else "upper CI"
    for name, limit in cfg.cost_limits.items():
        est = evidence.ope_costs.get(name)
        if est is None or not _finite(est.ci_high):
            checks.append(Check(f"cost:{name}", False, f"no finite OPE estimate for {name} (limit {limit:g})"))
            continue
        c = _compare(f"cost:{name}", est.ci_high, limit, True, upper, "limit")
        checks.append(_with_band(_with_ess(c, est, cfg.min_ess), cfg.band("cost")))

    # return: superiority to the champion, or non-inferiority to the clinicians' logged return
    lower = f"{evidence.return_estimator} lower CI" if evidence.return_estimator else "lower CI"
    est = candidate_return if candidate_return is not None else evidence.ope_return
    logged = evidence.logged_return
    if est is None or not _finite(est.ci_low):
        checks.append(Check("return", False, "no finite OPE estimate of the reward return"))
    elif champion_return is not None:
        c = _compare("return", est.ci_low, champion_return, False, lower,
                     "champion estimate on the current test split")
        checks.append(_with_band(_with_ess(c, est, cfg.min_ess), cfg.band("return")))
    elif logged is None or not _finite(logged.value):
        checks.append(Check("return", False, "no champion yet and no logged clinicians' return to compare with "
                            "(metrics behaviour/onpolicy/<return>)"))
    else:
        need = logged.value - cfg.noninferiority_margin
        c = _compare("return", est.ci_low, need, False, f"no champion yet: non-inferiority, {lower}",
                     f"clinicians' logged return {logged.value:.4g} - margin {cfg.noninferiority_margin:g} =")
        checks.append(_with_band(_with_ess(c, est, cfg.min_ess), cfg.band("return")))

    return Decision(all(c.passed for c in checks), tuple(checks))


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
        log.info("gate %s v%s %s", model_name, version, c.line())
    if decision.promote:
        client.set_registered_model_alias(model_name, CHAMPION, version)
        aliases = client.get_model_version(model_name, version).aliases
        if CHALLENGER in aliases:
            client.delete_registered_model_alias(model_name, CHALLENGER)
        log.info("gate %s v%s promoted to %s", model_name, version, CHAMPION)
    else:
        log.info("gate %s v%s stays %s: %s", model_name, version, CHALLENGER, decision.summary())
