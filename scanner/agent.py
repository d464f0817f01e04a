"""The scheduled agent: APScheduler fires scan and report jobs built from config.yaml at every start.

APScheduler keeps jobs in memory only; everything that must survive a restart lives in hcscan's tables:
each scheduled slot is claimed as a row (scanner.store.slots), which is also the lock between agents that
serve the same region. On start the agent marks what a killed predecessor left `running` as `interrupted`
and runs one coalesced catch-up per job for a slot missed within the grace.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from scanner.agent_config import JobKind, ScheduleConfig, ScheduleScope, cron_fields
from scanner.app import RunAbandoned, Workspace, load_workspace, plan_scan, run_scan
from scanner.config import Config
from scanner.engine import Selection
from scanner.errors import InputError, Problem
from scanner.fileio import DiskFull, OutputError
from scanner.store import repo, slots
from scanner.store.locks import exclusive
from scanner.yamlio import load_yaml

log = logging.getLogger("hcscan.agent")
REPORT_LOCK = "central-report"
DATA_UPDATE_LOCK = "version-data-update"
_UNSCOPED = (JobKind.REPORT, JobKind.DATA_UPDATE)  # one slot per firing (scope "all"), not one per region
NOTIFY_LOCK = "notifications"
FIRE_TOLERANCE = timedelta(seconds=60)
_MAX_SLOT_STEPS = 200_000  # bounds the walk over fire times within the grace (every second for ~2 days)


def _event(event: str, level: int = logging.INFO, /, **fields: Any) -> None:
    log.log(level, event, extra={"event": event, "fields": fields})


# -- jobs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One schedule entry turned into a trigger."""

    id: str
    kind: JobKind
    cron: str
    timezone: str
    scope: ScheduleScope
    trigger: Any  # apscheduler.triggers.cron.CronTrigger (untyped library)

    def next_fire(self, after: datetime) -> datetime | None:
        nxt: datetime | None = self.trigger.get_next_fire_time(None, after)
        return nxt

    def latest_slot(self, now: datetime, grace: timedelta) -> datetime | None:
        """The newest fire time in [now - grace, now], in UTC; None when no slot is due (coalesces older ones)."""
        latest: datetime | None = None
        t = self.next_fire(now - grace)
        steps = 0
        while t is not None and t <= now and steps < _MAX_SLOT_STEPS:
            latest = t
            t = self.next_fire(t + timedelta(microseconds=1))
            steps += 1
        return None if latest is None else latest.astimezone(UTC)


def build_jobs(config: Config) -> list[Job]:
    """Jobs from the `schedules:` section (cron strings were validated when the config was loaded)."""
    from apscheduler.triggers.cron import CronTrigger

    jobs = []
    for sched in config.schedules:
        if not sched.enabled:
            continue
        tz = sched.timezone or config.agent.timezone
        trigger = CronTrigger(**cron_fields(sched.cron), timezone=ZoneInfo(tz))
        jobs.append(Job(sched.id, sched.kind, sched.cron, tz, sched.scope, trigger))
    return jobs


def check_agent_config(config: Config, ws: Workspace) -> None:
    """Names in `agent:` and `schedules:` must exist in the inventory and catalogue; errors name file:line."""
    assert config.source is not None
    loaded = load_yaml(config.source)
    problems: list[Problem] = []
    regions = set(ws.inventory.regions)
    families = {c.spec.family for c in ws.catalog.controls.values()}
    known = {
        "regions": regions,
        "families": families,
        "controls": set(ws.catalog.controls),
        "systems": set(ws.inventory.systems),
    }

    def unknown(path: tuple[str | int, ...], label: str, names: Sequence[str] | None, pool: set[str]) -> None:
        for i, name in enumerate(names or ()):
            if name not in pool:
                hint = f"known: {', '.join(sorted(pool)) or 'none'}"
                problems.append(loaded.problem((*path, i), f"unknown {label} '{name}'", hint))

    unknown(("agent", "regions"), "region", config.agent.regions, regions)
    served = set(config.agent.regions) if config.agent.regions is not None else regions
    enabled = [(i, s) for i, s in enumerate(config.schedules) if s.enabled]
    for i, sched in enabled:
        for key in ("regions", "families", "controls", "systems"):
            unknown(
                ("schedules", i, "scope", key),
                key.rstrip("s").replace("familie", "family"),
                getattr(sched.scope, key),
                known[key],
            )
        if sched.kind is JobKind.DATA_UPDATE and config.exposure.version_data.path is None:
            problems.append(
                loaded.problem(
                    ("schedules", i, "kind"),
                    f"schedule '{sched.id}' updates the version data, but exposure.version_data.path is not set",
                    "set exposure.version_data.path: the shipped data inside the package is never rewritten",
                )
            )
        if sched.kind not in _UNSCOPED and not _scan_regions(sched, served):
            problems.append(
                loaded.problem(
                    ("schedules", i, "scope"),
                    f"schedule '{sched.id}' scans no region this agent serves",
                    f"agent.regions is {sorted(served)}; add the region there or remove the schedule",
                )
            )
    if not enabled:
        problems.append(
            loaded.problem(
                ("schedules",),
                "no enabled schedules: the agent would have nothing to do",
                "add entries under `schedules:` (see docs/agent.md)",
            )
        )
    if problems:
        raise InputError(problems)


def _scan_regions(sched: ScheduleConfig | Job, served: set[str]) -> list[str]:
    wanted = set(sched.scope.regions) if sched.scope.regions is not None else served
    return sorted(wanted & served)


# -- the agent ----------------------------------------------------------------------------------------


@dataclass
class _Active:
    job_id: str
    slot_id: int
    run_id: int | None = None
    lease_lost: bool = False  # another agent took the slot over: this run must not be stored


@dataclass
class AgentOutcome:
    """What an agent process did: its exit code and, for --once, each slot's end state."""

    exit_code: int
    slot_states: list[str] = field(default_factory=list)


class Agent:
    """Runs the configured jobs; one instance per process."""

    def __init__(self, config_path: Path, config: Config, ws: Workspace, engine: Engine) -> None:
        from scanner.probes.registry import fact_names

        self.config_path = config_path
        self.config = config
        self.engine = engine
        self.fact_names = fact_names()
        self.jobs = build_jobs(config)
        self.served = set(config.agent.regions) if config.agent.regions is not None else set(ws.inventory.regions)
        self.holder = slots.Holder(config.agent.id, socket.gethostname(), os.getpid())
        self.grace = timedelta(seconds=config.agent.catchup_grace_s)
        self.lease = timedelta(seconds=config.agent.lease_s)
        self.stop = threading.Event()
        self._job_locks = {job.id: threading.Lock() for job in self.jobs}
        self._guard = threading.Lock()
        self._active: dict[int, _Active] = {}
        self._busy = 0
        self._states: list[str] = []
        self._signal_name = ""

    # -- lifecycle ------------------------------------------------------------------------------------

    def recover(self) -> None:
        """What a killed predecessor on this host left running is marked interrupted, so it is never counted."""
        runs = repo.mark_interrupted_runs(self.engine, self.holder.host)
        claims = slots.release_dead_claims(self.engine, self.holder.host)
        if runs or claims:
            _event("agent.recovered", interrupted_runs=runs, released_slots=claims)

    def run_once(self) -> AgentOutcome:
        """Run every job whose latest slot (within the grace) is unclaimed, then return."""
        self.recover()
        worker = threading.Thread(target=self._once_body, name="agent-once", daemon=True)
        with self._signals():
            worker.start()
            while worker.is_alive() and not self.stop.is_set():
                worker.join(0.2)
            if worker.is_alive():
                self._shutdown("signal")
                return AgentOutcome(0, list(self._states))
        failed = any(s == slots.FAILED for s in self._states)
        _event("agent.once.done", slots=self._states)
        return AgentOutcome(1 if failed else 0, list(self._states))

    def _once_body(self) -> None:
        for job in self.jobs:
            if self.stop.is_set():
                return
            self.fire(job, "once")

    def run_forever(self) -> AgentOutcome:
        """Schedule every job (plus a start-up catch-up and a periodic sweep) until SIGTERM/SIGINT."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self.recover()
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(len(self.jobs) + 2)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=ZoneInfo(self.config.agent.timezone),
        )
        now = datetime.now(UTC)
        for job in self.jobs:
            scheduler.add_job(self.fire, job.trigger, args=[job, "schedule"], id=job.id)
            # One coalesced catch-up per job at start; the per-job lock keeps it from overlapping the schedule.
            scheduler.add_job(self.fire, "date", run_date=now, args=[job, "catch-up"], id=f"{job.id}:catch-up")
        sweep = IntervalTrigger(seconds=self.config.agent.sweep_s)
        scheduler.add_job(self.sweep, sweep, id="hcscan-sweep", next_run_time=now + timedelta(seconds=1))
        with self._signals():
            scheduler.start()
            _event("agent.started", **self.describe(now))
            while not self.stop.wait(1.0):
                pass
            scheduler.shutdown(wait=False)
            self._shutdown("signal")
        return AgentOutcome(0, list(self._states))

    def describe(self, now: datetime) -> dict[str, Any]:
        return {
            "agent_id": self.holder.agent_id,
            "pid": self.holder.pid,
            "regions": sorted(self.served),
            "jobs": {j.id: {"cron": j.cron, "tz": j.timezone, "next": _iso(j.next_fire(now))} for j in self.jobs},
        }

    @staticmethod
    def _install(handler: Any) -> dict[int, Any]:
        return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    @contextmanager
    def _signals(self) -> Iterator[None]:
        def handler(signum: int, _frame: FrameType | None) -> None:
            # No logging here: a handler may interrupt the main thread inside a log call.
            self._signal_name = signal.Signals(signum).name
            self.stop.set()

        previous = self._install(handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _shutdown(self, why: str) -> None:
        """Let running scans finish within the bound; cut off what is still running and exit."""
        _event("agent.stopping", signal=self._signal_name, bound_s=self.config.agent.shutdown_grace_s)
        deadline = time.monotonic() + self.config.agent.shutdown_grace_s
        while time.monotonic() < deadline:
            with self._guard:
                if self._busy == 0:
                    _event("agent.stopped", clean=True)
                    return
            time.sleep(0.05)
        with self._guard:
            cut = list(self._active.values())
        detail = f"the agent stopped ({why}) before the run completed; bound {self.config.agent.shutdown_grace_s:g}s"
        for work in cut:
            if work.run_id is not None:
                slots.interrupt_run(self.engine, work.run_id, detail)
            slots.finish(self.engine, work.slot_id, self.holder, slots.INTERRUPTED, detail)
            _event("slot.interrupted", logging.WARNING, job=work.job_id, slot_id=work.slot_id, run_id=work.run_id)
        _event("agent.stopped", clean=False, cut_off=len(cut))
        logging.shutdown()
        # Probe threads cannot be interrupted; what they would still write is already marked interrupted.
        os._exit(0)

    # -- firing -------------------------------------------------------------------------------------

    def sweep(self) -> None:
        """Take over slots whose holder died (lease expired) and run slots nobody claimed, within the grace."""
        for job in self.jobs:
            if self.stop.is_set():
                return
            self.fire(job, "sweep")

    def fire(self, job: Job, reason: str) -> None:
        """Claim and run the job's latest due slot for every scope this agent serves. Never overlaps itself."""
        if self.stop.is_set():
            return
        lock = self._job_locks[job.id]
        if not lock.acquire(blocking=False):
            level = logging.DEBUG if reason == "sweep" else logging.WARNING
            _event("job.busy", level, job=job.id, reason=reason, detail="the previous run of this job is still going")
            return
        with self._guard:
            self._busy += 1
        try:
            now = datetime.now(UTC)
            # A scheduled firing may start a little late; a catch-up looks back only as far as the grace.
            slot = job.latest_slot(now, max(self.grace, FIRE_TOLERANCE) if reason == "schedule" else self.grace)
            if slot is None:
                return
            scopes = ["all"] if job.kind in _UNSCOPED else [f"region:{r}" for r in _scan_regions(job, self.served)]
            for scope in scopes:
                if self.stop.is_set():
                    return
                self._run_slot(job, scope, slot, reason)
        finally:
            with self._guard:
                self._busy -= 1
            lock.release()

    def _run_slot(self, job: Job, scope: str, slot: datetime, reason: str) -> None:
        slot_id = slots.claim(self.engine, job.id, scope, slot, self.holder, self.lease)
        if slot_id is None:
            _event("slot.taken", logging.DEBUG, job=job.id, scope=scope, slot=_iso(slot))
            return
        fields = {"job": job.id, "scope": scope, "slot": _iso(slot), "slot_id": slot_id, "reason": reason}
        earlier = slots.earlier_active(self.engine, slot_id, self.holder)
        if earlier is not None:
            detail = f"slot {_iso(earlier.slot_start)} of this job is still running on {earlier.holder}"
            slots.finish(self.engine, slot_id, self.holder, slots.SKIPPED, detail)
            self._states.append(slots.SKIPPED)
            _event("slot.skipped", logging.WARNING, **fields, detail=detail)
            return
        _event("slot.claimed", **fields)
        work = _Active(job.id, slot_id)
        with self._guard:
            self._active[slot_id] = work
        keeper = _LeaseKeeper(self, work)
        keeper.start()
        state, detail = slots.FAILED, "the job did not finish"
        started = time.monotonic()
        try:
            if job.kind is JobKind.REPORT:
                state, detail = self._report(job)
            elif job.kind is JobKind.DATA_UPDATE:
                state, detail = self._data_update()
            elif job.kind is JobKind.SAMPLE:
                state, detail = self._sample(job, scope.removeprefix("region:"))
            else:
                state, detail = self._scan(job, scope.removeprefix("region:"), work)
        except InputError as exc:
            state, detail = slots.FAILED, f"invalid input: {exc}"
        except (DiskFull, OutputError) as exc:  # the machine's state, not a bug: one line, no traceback
            log.error(
                "job could not complete", extra={"event": "job.incomplete", "fields": {**fields, "detail": str(exc)}}
            )
            state, detail = slots.FAILED, str(exc)
        except Exception as exc:
            log.exception("job crashed", extra={"event": "job.crashed", "fields": fields})
            state, detail = slots.FAILED, f"job crashed: {exc!r}"
        finally:
            keeper.stop()
            if self.stop.is_set() and state == slots.FAILED and work.run_id is not None:
                state = slots.INTERRUPTED
            slots.finish(self.engine, slot_id, self.holder, state, detail)
            with self._guard:
                self._active.pop(slot_id, None)
            self._states.append(state)
            level = logging.INFO if state == slots.DONE else logging.WARNING
            _event(
                f"slot.{state}",
                level,
                **fields,
                run_id=work.run_id,
                detail=detail,
                seconds=round(time.monotonic() - started, 3),
            )

    def _scan(self, job: Job, region: str, work: _Active) -> tuple[str, str]:
        from scanner.probes.registry import make_probes, probe_protocols

        # Inventory and controls are re-read at every run, so edits apply without a restart (schedules need one).
        ws = load_workspace(self.config_path, self.fact_names)
        scope = job.scope

        def fs(values: list[str] | None) -> frozenset[str] | None:
            return frozenset(values) if values is not None else None

        selection = Selection(
            regions=frozenset({region}),
            systems=fs(scope.systems),
            controls=fs(scope.controls),
            families=fs(scope.families),
        )
        plan, _ = plan_scan(ws, selection, probe_protocols())
        if not plan.checks:
            return slots.DONE, "nothing to scan: no control applies to the selected endpoints"

        def started(run_id: int) -> None:
            work.run_id = run_id
            slots.set_running(self.engine, work.slot_id, self.holder, run_id)

        probes = make_probes(ws.config)  # InputError (unreadable version data) fails the slot, closed

        def abandon() -> str | None:
            return "the slot's lease was lost (another agent took it over); not stored" if work.lease_lost else None

        try:
            result = run_scan(
                ws, plan, probes, selection, agent_id=self.holder.agent_id, on_run_started=started, abandon=abandon
            )
        except RunAbandoned as exc:
            return slots.INTERRUPTED, str(exc)
        counts = ", ".join(f"{v} {k}" for k, v in sorted(result.summary.counts.items()))
        self._notify(ws.config)
        return slots.DONE, f"run #{result.summary.run_id}: {counts or 'no findings'}"

    def _notify(self, config: Config) -> None:
        """After a scan, send due notices (each once); one agent at a time, so two agents never send one twice."""
        if not config.notifications.webhooks and config.notifications.smtp is None:
            return
        from scanner.notify import send_notices

        with exclusive(self.engine, NOTIFY_LOCK, self.holder.key, self.lease) as got:
            if not got:
                return  # another agent is sending right now; what remains due goes out after the next run
            report = send_notices(self.engine, config)
        if report.sent:
            _event("notices.sent", logging.INFO, count=len(report.sent))
        for problem in report.errors:
            _event("notices.failed", logging.WARNING, error=problem)

    def _sample(self, job: Job, region: str) -> tuple[str, str]:
        from scanner.app_availability import run_sample

        ws = load_workspace(self.config_path, self.fact_names)
        systems = frozenset(job.scope.systems) if job.scope.systems is not None else None
        result = run_sample(ws, Selection(regions=frozenset({region}), systems=systems))
        return slots.DONE, (
            f"round #{result.round_id}: {result.n_up} up, {result.n_down} down, {result.n_unknown} unknown"
        )

    def _data_update(self) -> tuple[str, str]:
        """`hcscan data update` on the configured file; a bad answer fails the slot and leaves the file alone."""
        from scanner.config import load_config
        from scanner.versiondata.update import UpdateError, run_update

        config = load_config(self.config_path)  # sources and path as configured now
        path = config.exposure.version_data.path
        if path is None:
            return slots.FAILED, "exposure.version_data.path is not set: nowhere to write the version data"
        with exclusive(self.engine, DATA_UPDATE_LOCK, self.holder.key, self.lease) as got:
            if not got:
                return slots.SKIPPED, "another agent is updating the version data"
            try:
                result = run_update(
                    config, config.resolve(path), log=lambda m: _event("data_update.progress", detail=m)
                )
            except UpdateError as exc:
                return slots.FAILED, f"version data not changed: {exc}"
        diff = result.diff
        return slots.DONE, (
            f"version data {result.data.file.data_version}: {len(diff.added)} added, {len(diff.changed)} changed, "
            f"{len(diff.removed)} removed"
        )

    def _report(self, job: Job) -> tuple[str, str]:
        from scanner.report.render import render_reports

        with exclusive(self.engine, REPORT_LOCK, self.holder.key, self.lease) as got:
            if not got:
                return slots.SKIPPED, "another agent is rendering the central report"
            paths = render_reports(
                self.engine,
                self.config.resolve(self.config.report.out_dir),
                None,
                language=self.config.report.language,
                sla_days=self.config.report.sla_days,
                file_mode=self.config.report.file_mode_bits,
            )
        return slots.DONE, f"wrote {len(paths)} report file(s)"


class _LeaseKeeper:
    """Renews a slot's lease while its job runs, so other agents never take over a live slot."""

    def __init__(self, agent: Agent, work: _Active) -> None:
        self.agent = agent
        self.work = work
        self.slot_id = work.slot_id
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{self.slot_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        interval = max(0.2, self.agent.lease.total_seconds() / 3)
        while not self._done.wait(interval):
            try:
                if not slots.renew(self.agent.engine, self.slot_id, self.agent.holder, self.agent.lease):
                    _event("slot.lease_lost", logging.ERROR, slot_id=self.slot_id)
                    self.work.lease_lost = True
                    return
            except Exception as exc:  # the store may be briefly unreachable; keep trying until the lease ends
                _event("slot.lease_renew_failed", logging.WARNING, slot_id=self.slot_id, error=repr(exc))


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).isoformat()


# -- entry points -------------------------------------------------------------------------------------


def start_agent(config_path: Path, once: bool) -> AgentOutcome:
    """Load and check everything, open the store, and run (forever, or once). InputError means exit 2."""
    from scanner.config import load_config
    from scanner.probes.registry import fact_names
    from scanner.store.db import open_store

    config = load_config(config_path)
    ws = load_workspace(config_path, fact_names())
    check_agent_config(config, ws)
    engine = open_store(config.resolved_store_url())
    try:
        agent = Agent(config_path, config, ws, engine)
        return agent.run_once() if once else agent.run_forever()
    finally:
        engine.dispose()


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    kind: str
    cron: str
    timezone: str
    next_run: datetime | None
    scope: str | None
    last_slot: datetime | None
    state: str | None
    holder: str | None
    run_id: int | None
    run_status: str | None
    finished_at: datetime | None
    detail: str


def agent_status(config_path: Path, now: datetime | None = None) -> list[JobStatus]:
    """Next run time of every job and the newest slot of each of its scopes (reads the store only)."""
    from scanner.config import load_config
    from scanner.store.db import open_store

    config = load_config(config_path)
    now = now or datetime.now(UTC)
    engine = open_store(config.resolved_store_url())
    try:
        latest = slots.latest_slots(engine)
    finally:
        engine.dispose()
    rows: list[JobStatus] = []
    for job in build_jobs(config):
        nxt = job.next_fire(now)
        mine = sorted((k, v) for k, v in latest.items() if k[0] == job.id)
        if not mine:
            rows.append(
                JobStatus(
                    job.id,
                    job.kind.value,
                    job.cron,
                    job.timezone,
                    nxt,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    "never ran",
                )
            )
        for (_, scope), s in mine:
            rows.append(
                JobStatus(
                    job.id,
                    job.kind.value,
                    job.cron,
                    job.timezone,
                    nxt,
                    scope,
                    s.slot_start,
                    s.state,
                    s.holder,
                    s.run_id,
                    s.run_status,
                    s.finished_at,
                    s.detail,
                )
            )
    return rows


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ts, level, event, logger and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", record.getMessage()),
            "logger": record.name,
        }
        data.update(getattr(record, "fields", {}))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class TextLogFormatter(logging.Formatter):
    """`time level event key=value …` for people reading journalctl."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fields = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items())
        text = f"{when} {record.levelname.lower():7} {getattr(record, 'event', record.getMessage())} {fields}".rstrip()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text
