"""A bounded FIFO of sampling jobs run one at a time by one worker thread.

One worker shares the CPU (or GPU) fairly between browser tabs: jobs run in the order they came, each
tab sees its position, a cancelled job leaves the queue at once (or stops at its next step when
running), and at most ``max_jobs`` unfinished jobs and ``max_kept`` finished ones are held in memory.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]  # {"type": "queued" | "progress" | "frame" | "done" | "failed" | "cancelled", …}
Work = Callable[["Job"], bytes]  # runs a job, emitting events; returns the result PNG


class JobCancelled(Exception):
    """Raised inside a job's work (from its step callback) once the job is cancelled."""


class QueueFull(RuntimeError):
    """More unfinished jobs than the server holds."""


@dataclass
class Job:
    """One request's work, its events (read by the page through Server-Sent Events) and its result."""

    job_id: str
    work: Work
    count: int  # images the result holds
    events: list[Event] = field(default_factory=list)
    state: str = "queued"  # queued → running → done | failed | cancelled
    result: bytes | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def check(self) -> None:
        """Raise JobCancelled once the job has been cancelled (its work calls this at every step)."""
        if self.cancelled.is_set():
            raise JobCancelled

    def emit(self, event: Event) -> None:
        """Record an event for the page; raises JobCancelled when the job has been cancelled."""
        self.check()
        self.events.append(event)


class JobQueue:
    """Jobs by id; one worker thread runs the queued ones in order."""

    def __init__(self, *, max_jobs: int = 8, max_kept: int = 16) -> None:
        self.max_jobs = max_jobs
        self.max_kept = max_kept
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._queue: deque[Job] = deque()
        self._ready = threading.Condition()
        self._ids = itertools.count()
        self._stop = False
        self._worker = threading.Thread(target=self._run, name="ddpm-serve-worker", daemon=True)
        self._worker.start()

    def submit(self, work: Work, count: int) -> Job:
        """Queue ``work``; refused with QueueFull while ``max_jobs`` jobs are unfinished."""
        with self._ready:
            unfinished = sum(not job.finished for job in self._jobs.values())
            if unfinished >= self.max_jobs:
                raise QueueFull(
                    f"the server is busy with {unfinished} jobs (at most {self.max_jobs}); try again shortly"
                )
            job = Job(f"{next(self._ids)}-{secrets.token_hex(8)}", work, count)
            self._jobs[job.job_id] = job
            self._queue.append(job)
            self._forget_old()
            self._ready.notify()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """0 while running or finished, else 1 + the number of jobs ahead of it (the page shows it)."""
        with self._ready:
            if job.state != "queued":
                return 0
            ahead = next((i for i, queued in enumerate(self._queue) if queued is job), len(self._queue))
            running = any(j.state == "running" for j in self._jobs.values())
            return ahead + 1 + int(running)

    def cancel(self, job: Job) -> None:
        """Stop a job: a queued one leaves the queue now, a running one at its next step."""
        with self._ready:
            job.cancelled.set()
            if job.state == "queued":
                self._queue.remove(job)
                job.state = "cancelled"
                job.events.append({"type": "cancelled"})

    def unfinished(self) -> int:
        with self._ready:
            return sum(not job.finished for job in self._jobs.values())

    def close(self) -> None:
        """Cancel everything and let the worker end."""
        with self._ready:
            self._stop = True
            for job in list(self._queue):
                self.cancel(job)
            for job in self._jobs.values():
                job.cancelled.set()
            self._ready.notify()

    def _forget_old(self) -> None:
        """Drop the oldest finished jobs beyond ``max_kept`` (their results with them)."""
        finished = [job_id for job_id, job in self._jobs.items() if job.finished]
        for job_id in finished[: max(0, len(finished) - self.max_kept)]:
            del self._jobs[job_id]

    def _next(self) -> Job | None:
        with self._ready:
            while not self._queue and not self._stop:
                self._ready.wait()
            if self._stop:
                return None
            job = self._queue.popleft()
            job.state = "running"
            return job

    def _run(self) -> None:
        while (job := self._next()) is not None:
            try:
                job.result = job.work(job)
                job.state = "done"
                job.events.append({"type": "done", "count": job.count})
            except JobCancelled:
                job.state = "cancelled"
                job.events.append({"type": "cancelled"})
            except Exception as err:  # a job's failure is reported to its page, never kills the worker
                job.state = "failed"
                job.events.append({"type": "failed", "message": " ".join(str(err).split()) or repr(err)})
            with self._ready:
                self._forget_old()
