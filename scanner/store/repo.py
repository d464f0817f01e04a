"""Writes of scan runs and findings. A run's findings and lifecycle land in one transaction or not at all."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, insert, select, text, update
from sqlmodel import Session, col

from scanner.models import CRITICALITY_WEIGHT, SEVERITY_WEIGHT, Criticality, Severity, Status
from scanner.results import FindingRecord, RunMeta, RunSummary
from scanner.store import lifecycle
from scanner.store.killpoints import kill_point
from scanner.store.locks import advisory_key
from scanner.store.models import ControlDef, Finding, FindingState, NoticeSent, RunFamilyAgg, ScanRun, SystemDef
from scanner.textsafe import clean_text, clean_value

RUNNING, COMPLETE, INTERRUPTED, FAILED = "running", "complete", "interrupted", "failed"
NOT_COMPLIANT = {Status.FAIL.value, Status.ERROR.value, Status.WAIVED.value}
_CHUNK = 500
_COMPLETE_LOCK_KEY = advisory_key("complete_run")  # PostgreSQL: one run completion at a time per store


class RunNoLongerRunning(RuntimeError):
    """The run was closed by someone else (interrupted, or already completed); its findings must not be stored."""


def _now() -> datetime:
    return datetime.now(UTC)


def pid_alive(pid: int) -> bool:
    """Whether a process of this host still exists (a run or slot it holds is not abandoned)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rowcount(result: Result[Any]) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def _close_if_running(session: Session, run_id: int, status: str, detail: str, finished_at: datetime | None) -> bool:
    """Close the run unless someone else closed it first: check and write are one conditional UPDATE.

    Whoever's UPDATE matches `status = 'running'` first wins; every later one matches no row (SQLite: writers
    are serialised by the database lock; PostgreSQL: the second UPDATE waits for the first's row lock, then
    re-reads the row and no longer matches). Never a read-then-write.
    """
    result = session.execute(
        update(ScanRun)
        .where(col(ScanRun.id) == run_id, col(ScanRun.status) == RUNNING)  # never un-complete a run
        .values(status=status, status_detail=clean_text(detail, 2000), finished_at=finished_at)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def mark_interrupted_runs(engine: Engine, host: str, alive: Callable[[int], bool] = pid_alive) -> list[int]:
    """Runs left `running` on this host by a process that no longer exists are marked `interrupted`.

    Each run is closed with the same conditional UPDATE as `end_run`, so a run that completed after we looked
    stays complete; returns the ids actually marked.
    """
    with Session(engine) as session, session.begin():
        stale = session.execute(
            select(col(ScanRun.id), col(ScanRun.pid)).where(col(ScanRun.status) == RUNNING, col(ScanRun.host) == host)
        ).all()
        dead = [int(run_id) for run_id, pid in stale if not alive(int(pid))]
        detail = "the scanning process ended before the run completed"
        return [run_id for run_id in dead if _close_if_running(session, run_id, INTERRUPTED, detail, None)]


def start_run(engine: Engine, meta: RunMeta, started_at: datetime | None = None) -> int:
    with Session(engine) as session:
        run = ScanRun(
            started_at=started_at or _now(),
            status=RUNNING,
            tool_version=meta.tool_version,
            catalog_digest=meta.catalog_digest,
            inventory_digest=meta.inventory_digest,
            config_digest=meta.config_digest,
            selection=meta.selection,
            regions=meta.regions,
            host=meta.host,
            pid=meta.pid,
            agent_id=meta.agent_id,
        )
        session.add(run)
        _record_definitions(session, meta)
        session.commit()
        assert run.id is not None
        kill_point("run_created")
        return run.id


def _record_definitions(session: Session, meta: RunMeta) -> None:
    """Snapshot control and system descriptions once per catalogue/inventory version, for reports."""
    have_controls = set(
        session.execute(
            select(col(ControlDef.control_id)).where(col(ControlDef.catalog_digest) == meta.catalog_digest)
        ).scalars()
    )
    rows = [
        {"catalog_digest": meta.catalog_digest, **asdict(c)} for c in meta.controls if c.control_id not in have_controls
    ]
    if rows:
        session.execute(insert(ControlDef), rows)
    have_systems = set(
        session.execute(
            select(col(SystemDef.system_id)).where(col(SystemDef.inventory_digest) == meta.inventory_digest)
        ).scalars()
    )
    rows = [
        {"inventory_digest": meta.inventory_digest, **asdict(s)}
        for s in meta.systems
        if s.system_id not in have_systems
    ]
    if rows:
        session.execute(insert(SystemDef), rows)


def end_run(engine: Engine, run_id: int, status: str, detail: str) -> bool:
    """Close a run that will not complete (interrupted by a signal, or failed by a bug); stores no findings.

    False when the run was no longer `running` (completed or closed by someone else): it is left as it is.
    """
    with Session(engine) as session, session.begin():
        return _close_if_running(session, run_id, status, detail, _now())


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _failed_before(session: Session, records: Sequence[FindingRecord], existing: dict[str, FindingState]) -> set[str]:
    """Of the fingerprints turning from pass / not applicable to fail, those some earlier run judged failing.

    Decides `regressed` (failing again) from `new` (a first failure). Every earlier fail or waived verdict has
    its own `finding` row (rows are written when the verdict changes), so the history answers exactly.
    """
    turning = [
        r.fingerprint
        for r in records
        if r.status is Status.FAIL
        and (prev := existing.get(r.fingerprint)) is not None
        and prev.status in (Status.PASS.value, Status.NOT_APPLICABLE.value)
    ]
    found: set[str] = set()
    for chunk in _chunks(turning):
        stmt = (
            select(col(Finding.fingerprint))
            .where(col(Finding.fingerprint).in_(chunk), col(Finding.status).in_(lifecycle.FAILED_STATUSES))
            .distinct()
        )
        found.update(str(fp) for fp in session.execute(stmt).scalars())
    return found


def verdict_digest(
    status: str, evidence: dict[str, Any], volatile: Iterable[str] = (), outcome: Sequence[str] = ()
) -> str:
    """What makes two verdicts the same: an unchanged verdict writes no new finding row, only lifecycle.

    Built from what the verdict depends on: its status, its evidence except the volatile readings (clock skew,
    uptime, timestamps: they move every scan on a steady host) and how each of its comparisons came out against
    the policy (FindingRecord.outcome) — so a skew of -0.63 s then -0.41 s is the same verdict, and a skew that
    crosses the limit is not. Not the message: it embeds the readings (the evidence holds what it was made of).
    """
    skip = set(volatile)
    stable = {k: v for k, v in evidence.items() if k not in skip}
    blob = json.dumps(["v2", status, stable, list(outcome)], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def legacy_digest(status: str, message: str, evidence: dict[str, Any]) -> str:
    """The digest stores written before migration 0007 hold (status, message and all evidence): a verdict judged
    the same as then is converted to its new digest without a new finding row."""
    blob = json.dumps([status, message, evidence], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def latest_evidence(evidence: dict[str, Any], volatile: Iterable[str]) -> dict[str, Any] | None:
    """The volatile readings of this verification, kept on the finding's state (None when it has none)."""
    found = {k: evidence[k] for k in volatile if k in evidence}
    return found or None


def _weight(severity: str, criticality: str) -> int:
    # The score formula itself is scanner.report.scoring; this is the same weight, stored per run for trends.
    return SEVERITY_WEIGHT[Severity(severity)] * CRITICALITY_WEIGHT[Criticality(criticality)]


def _family_aggregates(run_id: int, records: Sequence[FindingRecord]) -> list[dict[str, Any]]:
    """Counts and weights of this run's verdicts per (region, family), with how many systems they cover."""
    aggs: dict[tuple[str, str], dict[str, Any]] = {}
    systems: dict[tuple[str, str], set[str]] = defaultdict(set)
    for rec in records:
        key = (rec.region_id, rec.family)
        a = aggs.setdefault(
            key,
            {"run_id": run_id, "region_id": rec.region_id, "family": rec.family, "n_pass": 0, "n_fail": 0,
             "n_error": 0, "n_waived": 0, "n_not_applicable": 0, "w_pass": 0, "w_total": 0},
        )  # fmt: skip
        systems[key].add(rec.system_id)
        status = rec.status.value
        a[f"n_{status}"] += 1
        if status in (Status.PASS.value, Status.FAIL.value, Status.ERROR.value):
            w = _weight(rec.severity, rec.criticality)
            a["w_total"] += w
            if status == Status.PASS.value:
                a["w_pass"] += w
    return [a | {"n_systems": len(systems[key])} for key, a in aggs.items()]


def complete_run(
    engine: Engine, run_id: int, records: Sequence[FindingRecord], finished_at: datetime | None = None
) -> RunSummary:
    """Store the run's verdicts, update each fingerprint's lifecycle and mark the run complete — atomically.

    A `finding` row (with its evidence) is written when a fingerprint is first judged or its verdict changes;
    an unchanged verdict only moves `finding_state.last_verified_at` / `last_run_id`. The run's counts and weights
    per region and family go to `run_family_agg`, so trends never re-read findings.
    """
    when = finished_at or _now()
    counts = Counter(r.status.value for r in records)
    changes: Counter[str] = Counter()
    with Session(engine) as session, session.begin():
        # First the write that decides: the run becomes `complete` only if it is still `running`. As the
        # transaction's first statement it takes SQLite's write lock before anything is read (so the lifecycle
        # below is read under that lock, never from a stale snapshot), and on PostgreSQL it holds the run row's
        # lock until COMMIT, so an interrupter's conditional UPDATE waits and then matches nothing. Raising
        # rolls the whole transaction back: nothing of this run is stored.
        if session.get_bind().dialect.name == "postgresql":
            # One completion at a time per store, as on SQLite: two runs over the same fingerprints (an agent
            # and a manual scan) would otherwise read the same lifecycle and both insert or overwrite it.
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _COMPLETE_LOCK_KEY})
        claimed = session.execute(
            update(ScanRun)
            .where(col(ScanRun.id) == run_id, col(ScanRun.status) == RUNNING)
            .values(
                status=COMPLETE,
                finished_at=when,
                n_findings=len(records),
                n_pass=counts[Status.PASS.value],
                n_fail=counts[Status.FAIL.value],
                n_error=counts[Status.ERROR.value],
                n_not_applicable=counts[Status.NOT_APPLICABLE.value],
                n_waived=counts[Status.WAIVED.value],
            )
            .execution_options(synchronize_session=False)
        )
        if _rowcount(claimed) != 1:
            raise RunNoLongerRunning(f"run {run_id} is no longer running (interrupted or completed by another process)")
        fps = [r.fingerprint for r in records]
        existing: dict[str, FindingState] = {}
        for chunk in _chunks(fps):
            for state in session.execute(
                select(FindingState).where(col(FindingState.fingerprint).in_(chunk))
            ).scalars():
                existing[state.fingerprint] = state
        failed_before = _failed_before(session, records, existing)
        finding_rows: list[dict[str, Any]] = []
        digests: dict[str, str] = {}
        new_states: list[dict[str, Any]] = []
        for rec in records:
            status = rec.status.value
            prev = existing.get(rec.fingerprint)
            change = lifecycle.change_label(prev.status if prev else None, status, rec.fingerprint in failed_before)
            changes[change] += 1
            # Target text was cleaned where it entered (engine.clean_outcome); messages also carry waiver reasons
            # and exception texts, so the store keeps the guarantee for everything it holds.
            message, evidence = clean_text(rec.message), clean_value(rec.evidence)
            digest = verdict_digest(status, evidence, rec.volatile, rec.outcome)
            latest = latest_evidence(evidence, rec.volatile)
            if (
                prev is not None
                and prev.verdict_digest != digest
                and prev.verdict_digest == legacy_digest(status, message, evidence)
            ):
                prev.verdict_digest = digest  # judged before migration 0007, unchanged since: no new row
            if prev is None or prev.verdict_digest != digest or prev.finding_id is None:
                digests[rec.fingerprint] = digest
                finding_rows.append(
                    {
                        "run_id": run_id,
                        "fingerprint": rec.fingerprint,
                        "control_id": rec.control_id,
                        "family": rec.family,
                        "severity": rec.severity,
                        "region_id": rec.region_id,
                        "system_id": rec.system_id,
                        "endpoint_key": rec.endpoint_key,
                        "criticality": rec.criticality,
                        "status": status,
                        "change": change,
                        "message": message,
                        "evidence": evidence,
                        "observed_at": when,
                    }
                )
            bad = status in NOT_COMPLIANT
            if prev is None:
                new_states.append(
                    {
                        "fingerprint": rec.fingerprint,
                        "control_id": rec.control_id,
                        "region_id": rec.region_id,
                        "system_id": rec.system_id,
                        "endpoint_key": rec.endpoint_key,
                        "status": status,
                        "first_seen_at": when if bad else None,
                        "last_seen_at": when if bad else None,
                        "resolved_at": None,
                        "last_verified_at": when,
                        "last_run_id": run_id,
                        "times_reopened": 0,
                        "verdict_digest": digest,
                        "severity": rec.severity,
                        "family": rec.family,
                        "latest_evidence": latest,
                    }
                )
            else:
                prev.status = status
                prev.last_verified_at = when
                if prev.latest_evidence != latest:  # a new object, never an in-place edit (JSON columns)
                    prev.latest_evidence = latest
                prev.last_run_id = run_id
                prev.severity = rec.severity
                prev.family = rec.family
                if bad:
                    if prev.first_seen_at is None:
                        prev.first_seen_at = when
                    # Failing again after a fix reopens it, also when an unassessed run came in between
                    # (fail → pass → error → fail is labelled "confirmed", but the fix did not hold).
                    reopened = prev.resolved_at is not None and change == lifecycle.CONFIRMED
                    if change == lifecycle.REGRESSED or reopened:
                        prev.times_reopened += 1
                        prev.resolved_at = None
                    prev.last_seen_at = when
                elif change in (lifecycle.FIXED, lifecycle.REASSESSED):  # turned compliant
                    prev.resolved_at = when
        if new_states:
            session.execute(insert(FindingState), new_states)
        if finding_rows:
            session.flush()
            for i in range(0, len(finding_rows), _CHUNK):
                session.execute(insert(Finding), finding_rows[i : i + _CHUNK])
                if i == 0:
                    kill_point("mid_findings")
            ids: dict[str, int] = {}
            for chunk in _chunks([r["fingerprint"] for r in finding_rows]):
                stmt = select(col(Finding.fingerprint), col(Finding.id)).where(
                    col(Finding.run_id) == run_id, col(Finding.fingerprint).in_(chunk)
                )
                ids.update({str(fp): int(i) for fp, i in session.execute(stmt).all()})
            session.execute(
                update(FindingState),
                [{"fingerprint": fp, "finding_id": ids[fp], "verdict_digest": d} for fp, d in digests.items()],
            )
        aggs = _family_aggregates(run_id, records)
        if aggs:
            session.execute(insert(RunFamilyAgg), aggs)
        session.flush()  # what COMMIT would flush anyway; sent now so the kill point below is "just before COMMIT"
        kill_point("before_commit")
    kill_point("after_commit")
    return RunSummary(run_id=run_id, status=COMPLETE, counts=dict(counts), changes=dict(changes))


def record_notices(engine: Engine, sent: Sequence[tuple[str, str, str]], at: datetime | None = None) -> None:
    """Remember delivered notices (key, kind, channels) so the next run does not send them again."""
    if not sent:
        return
    when = at or _now()
    with Session(engine) as session, session.begin():
        session.execute(
            insert(NoticeSent), [{"key": k, "kind": kind, "channels": ch, "sent_at": when} for k, kind, ch in sent]
        )
