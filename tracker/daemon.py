"""`tracker run`: one worker running the steps on an APScheduler loop.

Each `tracker run` registers as a worker and claims the batches it handles (see
`tracker.store.workers`). On SQLite it first takes the single-writer lease, so one worker runs
per database file; on PostgreSQL any number run side by side and share the work.

Each step runs in a thread of its own (a step never overlaps itself), so a long ingest does not
hold up polling, submitting or the heartbeat: no transaction spans a provider call, and the
database's own locking decides who writes when. The steps work on batches in different
statuses, so two never handle one batch at once. SIGTERM and SIGINT let the running steps
finish, then the worker gives back its claims (and the lease) and exits 0. A worker that finds
its lease taken over or its worker row removed (it was paused past them) stops before its next
write or provider call and exits 1.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from tracker.context import Context, log
from tracker.errors import LeaseLost
from tracker.steps import ingest, pack, poll, submit
from tracker.steps.delete_files import delete_files
from tracker.store import lease as leases
from tracker.store import reports, spend, workers
from tracker.store.engine import is_postgresql, write


def is_idle(ctx: Context) -> bool:
    """No item waiting or in flight, no batch open (for any worker), and no provider file
    due for deletion."""
    return reports.is_idle(ctx.engine, ctx.now())


#: The steps, in the order of one pass.
STEPS = (("pack", pack), ("submit", submit), ("poll", poll), ("ingest", ingest),
         ("delete_files", delete_files))


def run_steps_once(ctx: Context) -> None:
    """One pass of every step, in order (what one tick of the daemon does)."""
    for _, step in STEPS:
        step(ctx)


#: A step run longer than this is reported by `/healthz` as stuck (a 200 MB download takes
#: minutes; a call hangs at most the SDK's timeout times its retries).
STUCK_AFTER = 1800.0

#: The scheduler's jobs that run steps (all but the heartbeat).
STEP_JOBS = (*(name for name, _ in STEPS), "idle")


class Daemon:
    def __init__(self, ctx: Context, *, until_idle: bool = False,
                 tick: float | None = None, lease_ttl: float = leases.LEASE_TTL,
                 metrics_address: tuple[str, int] | None = None) -> None:
        ctx.worker_ttl = lease_ttl
        ctx.hand_off = self.hand_off
        self.ctx = ctx
        self.until_idle = until_idle
        self.lease_ttl = lease_ttl
        self.lost_lease = False
        self.tick = tick if tick is not None else min(max(ctx.poll_interval / 2, 0.05), 5.0)
        self.stop_event = threading.Event()
        self.lease: leases.Lease | None = None
        #: Held while each step runs: a clean stop waits for them with the heartbeat still
        #: going, so a long last step does not let the claims lapse under it.
        self.step_running = {name: threading.Lock() for name in STEP_JOBS}
        #: Set when a step is handed work while it runs: it runs again right after.
        self.handed = {name: threading.Event() for name in STEP_JOBS}
        self.scheduler: BackgroundScheduler | None = None
        self.metrics_address = metrics_address
        self.last_heartbeat = self.last_tick = time.monotonic()
        #: When each step's current run started (None: not running), for `/healthz`.
        self.running_since: dict[str, float | None] = {name: None for name in STEP_JOBS}

    def _guard(self, name: str, step: Callable[[Context], object]) -> Callable[[], None]:
        def job() -> None:
            if self.stop_event.is_set():
                return
            try:
                with self.step_running[name]:
                    self.last_tick = time.monotonic()
                    try:
                        while not self.stop_event.is_set():
                            self.handed[name].clear()
                            self.running_since[name] = time.monotonic()
                            step(self.ctx)
                            if not self.handed[name].is_set():
                                break
                    finally:
                        self.running_since[name] = None
            except LeaseLost:
                self._lease_lost()
            except Exception as exc:
                # A step that fails is retried at the next tick; the daemon keeps running.
                self.ctx.note_error(type(exc).__name__, name)
                log.exception("step %s failed; it will run again", name)
        return job

    def hand_off(self, name: str) -> None:
        """Run step `name` now: at once if it is idle, or again as soon as its current run
        ends (a hand-off that misses both waits for the step's next tick)."""
        self.handed[name].set()
        scheduler = self.scheduler
        if scheduler is None or self.stop_event.is_set():
            return
        with contextlib.suppress(JobLookupError):  # stopping: the step jobs are removed
            scheduler.modify_job(name, next_run_time=datetime.now())

    def _lease_lost(self) -> None:
        if not self.lost_lease:
            log.error("lost the daemon lease to another process; stopping")
        self.lost_lease = True
        self.stop_event.set()

    def _heartbeat(self) -> None:
        assert self.ctx.worker is not None
        try:
            renewed = self.lease is None or leases.renew(
                self.ctx.engine, self.lease, self.ctx.now(), self.lease_ttl)
            renewed = renewed and workers.heartbeat(
                self.ctx.engine, self.ctx.worker, None, self.lease_ttl)
            if not renewed:
                self._lease_lost()
            else:
                self.last_heartbeat = time.monotonic()
        except Exception:
            log.exception("lease heartbeat failed; will retry")

    def health(self) -> tuple[bool, str]:
        """Healthy while this worker holds its lease (a heartbeat within it) and its steps
        keep ticking; the reason either way, for `/healthz`."""
        now = time.monotonic()
        if self.lost_lease:
            return False, "lost its lease to another process"
        if self.stop_event.is_set():
            return False, "stopping"
        beat, tick = now - self.last_heartbeat, now - self.last_tick
        if beat > self.lease_ttl:
            return False, f"no heartbeat for {beat:.0f}s (lease {self.lease_ttl:.0f}s)"
        if tick > 3 * self.tick + 5:
            return False, f"no step has started for {tick:.0f}s"
        stuck = {name: now - since for name, since in self.running_since.items()
                 if since is not None and now - since > STUCK_AFTER}
        if stuck:
            name, seconds = max(stuck.items(), key=lambda pair: pair[1])
            return False, f"step {name} has been running for {seconds:.0f}s"
        return True, f"lease held, heartbeat {beat:.1f}s ago, last tick {tick:.1f}s ago"

    def _start_worker(self) -> None:
        engine, now = self.ctx.engine, self.ctx.now()
        if not is_postgresql(engine):
            self.lease = leases.acquire(engine, now, self.lease_ttl)
            self.ctx.lease_token = self.lease.token
        self.ctx.lease_clock_from_database = True
        self.ctx.worker = workers.register(engine, None, self.lease_ttl)
        with write(engine) as conn:
            spend.recheck_waiting(conn, now)  # the config's budget may have been raised
        if self.lease is not None:
            with write(engine) as conn:
                workers.remove_others(conn, self.ctx.worker)
            log.info("daemon started (pid %d, lease token %d); poll interval %.1fs",
                     self.lease.pid, self.lease.token, self.ctx.poll_interval)
        else:
            log.info("worker %s started; poll interval %.1fs", self.ctx.worker.id,
                     self.ctx.poll_interval)

    def _stop_worker(self) -> None:
        if self.lost_lease:
            return
        if self.ctx.worker is not None:
            workers.deregister(self.ctx.engine, self.ctx.worker)
        if self.lease is not None:
            leases.release(self.ctx.engine, self.lease)

    def _check_idle(self) -> None:
        if self.until_idle and is_idle(self.ctx):
            waiting = reports.waiting_for_budget(self.ctx.engine)
            if waiting:
                log.warning("idle: %d batch(es) wait for budget (tracker status says why); "
                            "raise it (tracker budget JOB USD, or batch.budget_usd) and run "
                            "again", waiting)
            log.info("idle: nothing queued, in flight or open; exiting")
            self.stop_event.set()

    def request_stop(self, signum: int, _frame: object) -> None:
        log.info("received %s; finishing the current step", signal.Signals(signum).name)
        self.stop_event.set()

    def _serve_metrics(self) -> Callable[[], None]:
        """Start `/metrics` and `/healthz`; returns what stops them (nothing without an
        address)."""
        if self.metrics_address is None:
            return lambda: None
        from tracker.metrics import Metrics, serve
        from tracker.store.reader import engine_snapshot

        engine = self.ctx.engine
        metrics = Metrics(lambda: engine_snapshot(engine), self.ctx.config)
        self.ctx.report_to(metrics.count_error, metrics.count_call)
        host, port = self.metrics_address
        server = serve(metrics, host, port, self.health)
        log.info("metrics at http://%s:%d/metrics, health at /healthz", host, server.port)
        return server.stop

    def run(self) -> int:
        self._start_worker()
        self.last_heartbeat = time.monotonic()
        try:
            stop_metrics = self._serve_metrics()
        except BaseException:
            self._stop_worker()
            raise
        previous = {sig: signal.signal(sig, self.request_stop)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        scheduler = self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(len(STEP_JOBS)),
                       "lease": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        start = datetime.now()
        for offset, (name, step) in enumerate(STEPS):
            scheduler.add_job(self._guard(name, step), "interval", seconds=self.tick, id=name,
                              next_run_time=start + timedelta(milliseconds=offset))
        scheduler.add_job(self._guard("idle", lambda _ctx: self._check_idle()), "interval",
                          seconds=self.tick, id="idle",
                          next_run_time=start + timedelta(milliseconds=10))
        scheduler.add_job(self._heartbeat, "interval", seconds=self.lease_ttl / 6,
                          id="heartbeat", executor="lease")
        try:
            scheduler.start()
            while not self.stop_event.wait(0.5):
                pass
        finally:
            self.stop_event.set()  # a step job that starts now returns at once
            for name in STEP_JOBS:
                scheduler.remove_job(name)
            for running in self.step_running.values():  # running steps end while the
                with running:                            # heartbeat goes on
                    pass
            scheduler.shutdown(wait=True)
            self._stop_worker()
            stop_metrics()
            self.ctx.hand_off = None
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            log.info("daemon stopped")
        return 1 if self.lost_lease else 0
