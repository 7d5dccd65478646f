"""Turning a policy decision into an admission outcome under the namespace's enforcement mode."""

from __future__ import annotations

from dataclasses import dataclass, field

from webhook.metrics import Metrics
from webhook.model import Namespace
from webhook.policy import Decision, Enforcement, enforcement_for


class Denial(Exception):
    """A refusal with a message safe to show (names only) and a metric reason."""

    def __init__(self, message: str, code: int = 403, reason: str = "denied", audit: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.audit = audit or {}


@dataclass(frozen=True)
class WouldDeny:
    """What enforce would have denied, admitted under audit or warn: for the would-deny metric and event."""

    mode: Enforcement
    reason: str  # the reason class (no-policy, provider-class, ...): a bounded set
    message: str  # names only, like a denial's


@dataclass
class Verdict:
    warnings: list[str] = field(default_factory=list)
    audit: dict[str, str] = field(default_factory=dict)
    would_deny: WouldDeny | None = None


class Judge:
    def __init__(self, default: Enforcement, metrics: Metrics, relaxable: frozenset[str] = frozenset()):
        self.default = default
        self.metrics = metrics
        self.relaxable = relaxable  # namespaces whose label may loosen enforcement

    def mode(self, namespace: Namespace | None) -> tuple[Enforcement, list[str]]:
        labels = namespace.labels if namespace else None
        mode, warning = enforcement_for(
            self.default, labels, namespace is not None and namespace.name in self.relaxable
        )
        return mode, [warning] if warning else []

    def findings(
        self, endpoint: str, mode: Enforcement, reason: str, problems: list[str], audit: dict[str, str]
    ) -> Verdict:
        """Problems found: a Denial when enforcing, else a verdict that lets the pod through."""
        if not problems:
            self.metrics.policy_decisions.labels(endpoint, "allowed", "allowed").inc()
            return Verdict(audit={**audit, "decision": "allowed"})
        message = problems[0] if len(problems) == 1 else "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        if mode is Enforcement.ENFORCE:
            self.metrics.policy_decisions.labels(endpoint, "denied", reason).inc()
            raise Denial(message, 403, reason, {**audit, "decision": "denied", "reason": message})
        self.metrics.policy_decisions.labels(endpoint, "would-deny", reason).inc()
        audit = {**audit, "decision": f"would-deny ({mode})", "reason": message}
        warnings = [f"kvinject ({mode} mode) would deny: {p}" for p in problems] if mode is Enforcement.WARN else []
        return Verdict(warnings, audit, WouldDeny(mode, reason, message))

    def decision(self, endpoint: str, mode: Enforcement, decision: Decision, audit: dict[str, str]) -> Verdict:
        audit = dict(audit)
        if decision.allowed_by:
            audit["policies"] = ",".join(decision.allowed_by)
        if decision.denied:
            audit["denied-objects"] = ",".join(str(r) for r in decision.denied)
        problems = [] if decision.allowed else [decision.message]
        return self.findings(endpoint, mode, decision.reason.value, problems, audit)
