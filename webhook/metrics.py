"""Prometheus metrics, in a registry per app so tests and embedded servers never share state."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.admissions = Counter(
            "kvinject_admissions",
            "Admission requests by endpoint, result and reason",
            ["endpoint", "result", "reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "kvinject_admission_duration_seconds",
            "Time to answer an admission request",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5),
        )
        self.bad_requests = Counter(
            "kvinject_bad_requests",
            "Requests answered with an HTTP 4xx",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.policy_decisions = Counter(
            "kvinject_policy_decisions",
            "Policy decisions by endpoint, outcome (allowed, denied, would-deny) and reason",
            ["endpoint", "outcome", "reason"],
            registry=self.registry,
        )
        # Low cardinality by design: the namespace, never an object's name.
        self.would_deny = Counter(
            "kvinject_would_deny",
            "Admissions that enforce would deny, admitted under audit or warn, by namespace, enforcement and reason",
            ["namespace", "enforcement", "reason"],
            registry=self.registry,
        )
        self.events = Counter(
            "kvinject_events",
            "Kubernetes Events kvinject wrote (written), could not write (failed), or dropped (too many pending)",
            ["result"],
            registry=self.registry,
        )
        self.live_duration = Histogram(
            "kvinject_live_verification_duration_seconds",
            "Time spent on live verification per admission",
            registry=self.registry,
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0),
        )
        self.live_cache = Counter(
            "kvinject_live_verification_cache",
            "Live verification lookups: hit, miss, or coalesced with a run",
            ["result"],
            registry=self.registry,
        )
        self.live_outcomes = Counter(
            "kvinject_live_verification_outcomes",
            "Live verification outcomes per object",
            ["outcome"],
            registry=self.registry,
        )
        self.refresh_injected = Counter(
            "kvinject_refresh_sidecars_injected",
            "Refresh sidecars (kvinject.io/refresh) added to pods, dry runs excluded",
            registry=self.registry,
        )
        self.provider_classes_created = Counter(
            "kvinject_secretproviderclasses_created",
            "SecretProviderClasses created",
            registry=self.registry,
        )
        # restart-on-change (webhook/restarter.py): by workload kind, never by name.
        self.restarts = Counter(
            "kvinject_restarts",
            "Workloads kvinject rolled because a mounted object's version changed, by kind and reason",
            ["kind", "reason"],
            registry=self.registry,
        )
        self.restarts_deferred = Counter(
            "kvinject_restarts_deferred",
            "Restarts kvinject put off (rollout-in-progress, rate-limited, cluster-rate-limited), by kind and reason",
            ["kind", "reason"],
            registry=self.registry,
        )
        self.restart_failures = Counter(
            "kvinject_restart_failures",
            "Reads and writes of restart-on-change that the API refused or did not answer, by operation",
            ["operation"],
            registry=self.registry,
        )
