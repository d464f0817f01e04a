"""Which notices are due after a scan (read-only): regressions, new critical findings, SLA breaches, waivers
about to expire. Each has a stable key, so a notice is sent once — delivery lives in scanner.notify."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from scanner.models import Status
from scanner.report.views import DEFAULT_SLA_DAYS
from scanner.store import queries


@dataclass(frozen=True)
class Notice:
    key: str  # kind + fingerprint + episode: the same key is never sent twice
    kind: str  # regression | new_critical | sla_breach | waiver_expiring
    region: str
    system: str
    endpoint: str
    control_id: str
    severity: str
    text: str


def due_notices(
    engine: Engine, now: datetime, sla_days: dict[str, int] | None = None, waiver_days: int = 30
) -> list[Notice]:
    """Every notice the store supports now, minus those already sent."""
    sla = {**DEFAULT_SLA_DAYS, **(sla_days or {})}
    today = now.astimezone(UTC).date()
    out: list[Notice] = []
    for region in queries.regions_with_findings(engine):
        findings = queries.latest_findings(engine, region)
        latest_run = max((f.run_id for f in findings), default=None)
        if latest_run is not None:
            for f in queries.changed_in_run(engine, region, latest_run):
                if f.change in ("regressed", "reactivated"):
                    what = "waiver expired, failing again" if f.change == "reactivated" else "failing again"
                    out.append(
                        Notice(
                            f"regression:{f.fingerprint}:{latest_run}", "regression", region, f.system_id,
                            f.endpoint_key, f.control_id, f.severity, f"{f.control_id} on {f.endpoint_key}: {what}: {f.message}",
                        )
                    )  # fmt: skip
        for f in findings:
            episode = f.first_seen_at.isoformat() if f.first_seen_at else ""
            # `confirmed`: could not be assessed before, now a confirmed failure — as new to the reader as `new`.
            if f.status == Status.FAIL.value and f.severity == "critical" and f.change in ("new", "confirmed"):
                out.append(
                    Notice(
                        f"new_critical:{f.fingerprint}:{episode}", "new_critical", region, f.system_id,
                        f.endpoint_key, f.control_id, f.severity, f"new critical finding {f.control_id} on {f.endpoint_key}: {f.message}",
                    )
                )  # fmt: skip
            if f.status in (Status.FAIL.value, Status.ERROR.value) and f.first_seen_at is not None:
                due = f.first_seen_at.date() + timedelta(days=sla.get(f.severity, 180))
                if due < today:
                    out.append(
                        Notice(
                            f"sla_breach:{f.fingerprint}:{episode}", "sla_breach", region, f.system_id, f.endpoint_key,
                            f.control_id, f.severity, f"{f.control_id} on {f.endpoint_key} is past its {f.severity} remediation deadline ({due})",
                        )
                    )  # fmt: skip
            waiver = f.evidence.get("waiver")
            if f.status == Status.WAIVED.value and isinstance(waiver, dict):
                expires = str(waiver.get("expires", ""))
                try:
                    left = (datetime.fromisoformat(expires).date() - today).days
                except ValueError:
                    continue
                if 0 <= left <= waiver_days:
                    out.append(
                        Notice(
                            f"waiver_expiring:{f.fingerprint}:{expires}", "waiver_expiring", region, f.system_id,
                            f.endpoint_key, f.control_id, f.severity, f"waiver for {f.control_id} on {f.endpoint_key} expires on {expires} ({left} days)",
                        )
                    )  # fmt: skip
    sent = queries.notices_already_sent(engine, [n.key for n in out])
    unique: dict[str, Notice] = {}
    for n in out:
        if n.key not in sent:
            unique.setdefault(n.key, n)
    return list(unique.values())
