"""Grading as jobs on a queue: what `grader serve` puts on it and what `grader worker` runs.

The queue is RQ's, on Redis (a maintained engine, not a home-made queue), so that workers on any
number of hosts can take jobs from one broker: at a deadline, 300 submissions of a minute each
are more than one host grades in an hour. A job is one submission on one lab, graded by
`grader.isolation.grade` exactly as `grader grade` does it, and its result is the Gradescope
`results.json` dict. The job's id is the request id of the HTTP request that made it, so one id
follows a submission through every log line of the service and of the workers.

What can go wrong, and what happens then:
- a worker (or its host) dies mid-grade: the horse that runs the job dies with its worker
  (PR_SET_PDEATHSIG), the grade's child with the horse, and RQ finds the job abandoned once
  its heartbeat lapses (`HEARTBEAT` + RQ's own 60 s); it runs again once (`RETRIES`), then it
  is failed and the service answers with a plain-words error. A second worker's namespaces are
  named after its own pids, so a dead worker's are removed by the next grade's clean-up;
- the grader fails (a fault, not a grade: `grader_fault`): the job raises, and is retried once;
- the client goes away: the service sets the job's cancel key; the running grade is stopped
  the way Ctrl-C stops `grader grade` (its namespaces removed), and the job ends `cancelled`.

Whoever can write to the broker must not run code on the workers (as root): jobs are serialized
as JSON, never pickled, and a worker runs `grade_job` and nothing else (`GradeJob`; RQ would
import any function a job names, and any callback). The broker is reached with a password,
given to workers in the environment, never on a command line where `ps` shows it.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import threading

from redis import Redis
from rq import Queue, Retry, Worker, get_current_job
from rq.job import Job
from rq.serializers import JSONSerializer

from bpflab.course.labs import load_lab
from bpflab.processes import die_with_parent, owned_temp_folder
from grader.isolation import Interrupted, grade, grader_fault, machine_limits, prepare
from grader.logs import request_id, setup_logging
from grader.report import gradescope

QUEUE = "bpflab-grade"
RETRIES = 1  # a job whose worker died, or whose grader failed, runs once more, then fails
HEARTBEAT = 5  # seconds between a busy worker's heartbeats; RQ adds 60 s before calling a job lost
JOB_TIMEOUT = 3600  # RQ's last resort; the grader's own limits stop a run long before
RESULT_TTL = 24 * 3600  # seconds a grade stays to be fetched by its id
CANCEL_POLL = 0.5  # seconds between a running job's looks at its cancel key
CANCELLED = {"cancelled": True}

log = logging.getLogger("grader.jobs")


class GraderFault(Exception):
    """The grader failed on a submission (not the submission's fault): worth one more run."""


class GradeJob(Job):
    """An RQ job that can only be `grade_job`: a job naming any other function, an instance to
    call it on, or a callback, fails without importing or running anything."""

    @property
    def func(self):
        if self.func_name != f"{__name__}.grade_job" or self.instance is not None:
            raise PermissionError(f"a grading worker runs grade_job only, not {self.func_name!r}")
        return grade_job

    def _no_callback(self, name: str | None):
        if name:
            raise PermissionError(f"a grading worker runs no callback ({name!r})")

    success_callback = property(lambda self: self._no_callback(self._success_callback_name))
    failure_callback = property(lambda self: self._no_callback(self._failure_callback_name))
    stopped_callback = property(lambda self: self._no_callback(self._stopped_callback_name))


def queue(connection: Redis) -> Queue:
    return Queue(QUEUE, connection=connection, serializer=JSONSerializer, job_class=GradeJob)


def connect(url: str) -> Redis:
    """The broker, with time limits: a broker cut off must fail a call, not hang it."""
    return Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)


def cancel_key(job_id: str) -> str:
    return f"bpflab:cancel:{job_id}"


def enqueue(connection: Redis, job_id: str, lab_id: str, program: bytes, course: str):
    """Put one submission on the queue; its job id is `job_id` (the request's id)."""
    return queue(connection).enqueue(
        grade_job, lab_id, base64.b64encode(program).decode(), job_id=job_id, retry=Retry(max=RETRIES),
        job_timeout=JOB_TIMEOUT, result_ttl=RESULT_TTL, failure_ttl=RESULT_TTL, meta={"course": course},
        description=f"{lab_id} ({len(program)} bytes)")


def cancel(connection: Redis, job_id: str) -> None:
    """Stop a job whose answer nobody waits for: taken off the queue, or stopped where it runs."""
    job = queue(connection).fetch_job(job_id)
    if job is None or job.is_finished or job.is_failed:
        return
    connection.set(cancel_key(job_id), 1, ex=RESULT_TTL)
    if job.is_queued or job.is_deferred or job.is_scheduled:
        job.cancel()


def grade_job(lab_id: str, program_b64: str) -> dict:
    """The job: grade the program on the lab in this worker's horse; the results.json dict."""
    job = get_current_job()
    request_id.set(job.id if job else "-")
    die_with_parent()  # the horse was forked by its worker: it must not outlive it
    prepare()  # what a grade of a worker killed on this host left (other workers' are alive)
    lab = load_lab(lab_id)
    stop = threading.Event()
    watcher = threading.Thread(target=watch_cancel, args=(job, stop), daemon=True)
    watcher.start()
    try:
        with owned_temp_folder("bpflab-job-") as folder:  # a killed worker's is removed by the next job
            (folder / lab.program).write_bytes(base64.b64decode(program_b64))
            log.info("grading %s", lab_id)
            try:
                result = grade(lab, folder, machine_limits(), hidden=True, stop=stop)
            except Interrupted:
                log.info("cancelled: nobody waits for it")
                return CANCELLED
    finally:
        stop.set()
    if fault := grader_fault(result):
        log.error("%s", fault)
        raise GraderFault(fault.splitlines()[0])
    log.info("graded %s: %g/%g", lab_id, result.score, result.max_score)
    return gradescope(result)


def watch_cancel(job, stop: threading.Event) -> None:
    """Set `stop` once the job's cancel key appears (or once the job is over)."""
    if job is None:
        return
    while not stop.wait(CANCEL_POLL):
        if job.connection.exists(cancel_key(job.id)):
            stop.set()


def work(url: str) -> None:
    """Be one grading worker on the broker at `url` until SIGTERM (which lets a running grade
    finish first, as RQ's warm shutdown does)."""
    setup_logging()
    prepare()  # what a killed worker of this host left
    connection = connect(url)
    name = f"{socket.gethostname()}-{os.getpid()}"
    worker = Worker([queue(connection)], connection=connection, name=name, serializer=JSONSerializer,
                    job_class=GradeJob, job_monitoring_interval=HEARTBEAT)
    worker.work(logging_level="INFO")
