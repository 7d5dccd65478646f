"""What an answer tells beyond the apiserver's caller: the would-deny metric, and the Events on the pod's owner.

A controller's pods are created by the controller: a denial shows as the ReplicaSet's FailedCreate, a warning
nowhere. So kvinject also writes its own Event on the controller (or the object itself): KvinjectDenied,
KvinjectWouldDeny (audit, warn), KvinjectAnnotationsIgnored. Dry runs write nothing and count nothing.
"""

from __future__ import annotations

from webhook import review
from webhook.cluster.events import EventRecorder, Notice, involved_in
from webhook.injection import Outcome, describe_pod
from webhook.metrics import Metrics
from webhook.names import EVENT_DENIED, EVENT_IGNORED, EVENT_WOULD_DENY

# Denials that say something about the workload (not a malformed request or kvinject's own failure).
_NOT_ABOUT_THE_WORKLOAD = frozenset({"bad-request"})


class Notices:
    def __init__(self, metrics: Metrics, recorder: EventRecorder | None):
        self.metrics = metrics
        self.recorder = recorder

    def after(self, request: review.Request, outcome: Outcome) -> None:
        if request.dry_run:
            return
        if outcome.would_deny is not None:
            wd = outcome.would_deny
            self.metrics.would_deny.labels(request.namespace, wd.mode.value, wd.reason).inc()
        if self.recorder is None:
            return
        involved = involved_in(request)
        if involved is None:
            return
        what = self._what(request)
        if outcome.would_deny is not None:
            wd = outcome.would_deny
            message = f"kvinject would deny {what} ({wd.mode} mode; enforce denies it): {wd.message}"
            self.recorder.record(Notice(involved, EVENT_WOULD_DENY, message))
        elif outcome.result == "denied" and outcome.reason not in _NOT_ABOUT_THE_WORKLOAD:
            status = outcome.response.get("response", {}).get("status", {})
            self.recorder.record(Notice(involved, EVENT_DENIED, str(status.get("message", ""))))
        if outcome.ignored:
            self.recorder.record(Notice(involved, EVENT_IGNORED, f"{what}: {outcome.ignored}"))

    @staticmethod
    def _what(request: review.Request) -> str:
        obj = request.object or {}
        if request.kind == "Pod":
            return describe_pod(obj)[:300]
        name = (obj.get("metadata") or {}).get("name") if isinstance(obj.get("metadata"), dict) else None
        return f"{request.kind} {str(name or '?')[:253]}"
