"""`python -m grader serve`: grading over HTTP, for Gradescope and any LMS that can call a URL.

POST a lab id, a student id and the program file (or answers file) to `/v1/grade` with a
course's bearer token; the answer is the Gradescope `results.json` of exactly the run `grader
grade` makes (hidden tests included, shown `after_published`). Grading happens on RQ workers
(grader.jobs), started here (`--jobs`) or on other hosts against the same broker (`grader
worker`); with no `--redis`, a private Redis is started here and stopped with the service.
FastAPI documents the API at `/docs` and `/openapi.json`.

Why each guard: tokens are per course (a leaked one is revoked without touching the others)
and kept as SHA-256 digests; a body over the limit is refused before it is read (413); a
student may submit `--rate-limit` times per `--rate-window` seconds (429), so one student's
loop cannot hold the queue at a deadline; a request that waits longer than `wait` gets 202 and a
URL to poll; a client that goes away cancels its job. Every log line carries the request id,
which is also the job's id on the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import time
import tomllib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from redis import Redis
from redis.exceptions import RedisError
from rq.job import JobStatus
from rq.registry import StartedJobRegistry

from bpflab.course.labs import all_labs, load_lab
from bpflab.processes import sigterm_as_interrupt
from grader import jobs
from grader.logs import request_id, setup_logging
from grader.sandbox import MAX_BYTES
from grader.service_config import RATE_LIMIT, RATE_WINDOW

BODY_LIMIT = MAX_BYTES + 16 * 1024  # the largest program file, and room for the form around it
POLL = 0.25  # seconds between a waiting request's looks at its job
CLEANUP_EVERY = 5.0  # seconds between sweeps for jobs whose worker died
MAX_WAIT = 1800.0  # seconds a request may ask to wait for its grade
SHUTDOWN_GRACE = 10  # seconds a stopping service gives the requests under way, then closes them
ENDED_UNGRADED = (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
UNGRADED = {JobStatus.FAILED: "Grading failed twice on the grading hosts",
            JobStatus.STOPPED: "The grading job was stopped",
            JobStatus.CANCELED: "The grading job was cancelled",
            None: "The grading job was lost (its results expire after a day, or the broker restarted)"}

log = logging.getLogger("grader.serve")


# -- tokens ---------------------------------------------------------------------------------------
def digest(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def read_tokens(path: Path) -> dict[str, str]:
    """Course id → its token's digest, from a TOML file with a `[courses]` table."""
    courses = tomllib.loads(path.read_text()).get("courses", {})
    if not all(isinstance(v, str) and v.startswith("sha256:") for v in courses.values()):
        raise ValueError(f"{path}: expected a [courses] table of course = \"sha256:...\" digests "
                         "(make one with `python -m grader token COURSE --tokens FILE`)")
    if not courses:  # a fresh install: the service runs, and answers 401 until a course has a token
        log.warning("%s holds no course token yet: make one with `python -m grader token COURSE "
                    "--tokens %s`, then restart the service", path, path)
    return courses


def add_token(path: Path, course: str) -> str:
    """A new token for `course`, its digest written to `path` (replacing the course's old one)."""
    token = secrets.token_urlsafe(32)
    courses = tomllib.loads(path.read_text()).get("courses", {}) if path.exists() else {}
    courses[course] = digest(token)
    lines = ["# Grading service tokens: course = SHA-256 digest of its bearer token.", "[courses]"]
    lines += [f'"{name}" = "{value}"' for name, value in sorted(courses.items())]
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write("\n".join(lines) + "\n")  # never readable by others, not even for a moment
    return token


# -- the application ------------------------------------------------------------------------------
@dataclass
class Settings:
    redis_url: str
    tokens: dict[str, str]
    rate_limit: int = RATE_LIMIT
    rate_window: int = RATE_WINDOW
    body_limit: int = BODY_LIMIT
    labs: list[str] = field(default_factory=lambda: [lab.id for lab in all_labs()])


def limit_body(app, limit: int):
    """ASGI middleware: 413 for a body over `limit` bytes. A larger Content-Length is refused
    before anything is read; any other body is read first, counting what really arrives, and
    handed on only if it fits (a Content-Length cannot be trusted beside Transfer-Encoding:
    chunked, and a limit raised while the framework parses the form would come out as its 400).
    Bodies are at most 80 KiB: reading them whole costs nothing."""

    async def guarded(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        too_large = JSONResponse({"detail": f"The upload is larger than {limit // 1024} KiB: submit only "
                                            "the lab's file."}, status_code=413)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            return await too_large(scope, receive, send)
        read, size = [], 0
        while True:
            message = await receive()
            read.append(message)
            size += len(message.get("body", b""))
            if size > limit:
                return await too_large(scope, receive, send)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        pending = iter(read)

        async def replayed():
            return next(pending, None) or await receive()

        return await app(scope, replayed, send)

    return guarded


def with_request_id(app):
    """ASGI middleware: a fresh id for each request, in every log line made while serving it and
    in the answer's X-Request-ID header, and one line per request when it is answered. Plain
    ASGI: Starlette's BaseHTTPMiddleware would hide a client's going away from the endpoint."""

    async def identified(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        token = request_id.set(uuid.uuid4().hex)
        start, status = time.monotonic(), 0

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                header = (b"x-request-id", request_id.get().encode())
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            seconds = time.monotonic() - start
            log.info("%s %s -> %d in %.2f s", scope["method"], scope["path"], status, seconds)
            request_id.reset(token)

    return identified


def course_of(request: Request) -> str:
    """The course whose token the request carries; 401 otherwise."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        for course, wanted in request.app.state.settings.tokens.items():
            if hmac.compare_digest(digest(token), wanted):
                return course
    raise HTTPException(401, "A course token is needed: Authorization: Bearer TOKEN.",
                        headers={"WWW-Authenticate": "Bearer"})


Course = Annotated[str, Depends(course_of)]


def create_app(settings: Settings) -> FastAPI:
    connection = jobs.connect(settings.redis_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(sweep_abandoned(connection))
        yield
        sweeper.cancel()

    app = FastAPI(title="bpflab grading service", version="1", lifespan=lifespan,
                  description="Grades one submission of an eBPF lab; answers Gradescope's results.json.")
    app.state.settings = settings

    @app.exception_handler(RedisError)
    async def broker_down(request: Request, error: RedisError) -> JSONResponse:
        log.error("the broker failed: %s", error)
        detail = ("Grading is unavailable right now (the grading queue does not answer): nothing was "
                  "graded, and nothing is lost. Submit again later.")
        return JSONResponse({"detail": detail}, status_code=503)
    app.add_middleware(limit_body, limit=settings.body_limit)
    app.add_middleware(with_request_id)  # outermost: every line, a 413's included, has the id

    @app.get("/health")
    def health() -> JSONResponse:
        """Whether the broker answers, how many workers grade and how many jobs wait."""
        try:
            workers, queued = len(jobs.Worker.all(connection=connection)), len(jobs.queue(connection))
        except Exception as error:  # the broker is down: say so, do not fail
            return JSONResponse({"status": "unavailable", "detail": f"broker: {error}"}, status_code=503)
        status = "ok" if workers else "no workers"
        return JSONResponse({"status": status, "workers": workers, "queued": queued},
                            status_code=200 if workers else 503)

    @app.get("/v1/labs")
    def labs(course: Course) -> list[dict]:
        """The labs this service grades: the id to send, the file to send, the points."""
        return [{"id": lab.id, "title": lab.title, "file": lab.program, "points": lab.points}
                for lab in map(load_lab, settings.labs)]

    @app.post("/v1/grade", responses={202: {"description": "Still grading: poll the `url` given."}})
    async def grade(request: Request, course: Course, lab: Annotated[str, Form()],
                    student: Annotated[str, Form(min_length=1, max_length=200)], file: UploadFile,
                    wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 600) -> JSONResponse:
        """Grade `file` on `lab` for `student`: the results.json, or 202 after `wait` seconds."""
        if lab not in settings.labs:
            raise HTTPException(422, f"There is no lab {lab!r}; the labs are {', '.join(settings.labs)}.")
        program = await file.read(settings.body_limit + 1)
        if not await asyncio.to_thread(admit, connection, course, student, settings):
            minutes = settings.rate_window // 60
            raise HTTPException(429, f"{student} has sent {settings.rate_limit} submissions in the last "
                                     f"{minutes} minutes: wait a little, then submit again.",
                                headers={"Retry-After": str(settings.rate_window)})
        job_id = request_id.get()
        log.info("%s/%s submits %s (%d bytes)", course, student, lab, len(program))
        await asyncio.to_thread(jobs.enqueue, connection, job_id, lab, program, course)
        return await answer(request, job_id, wait, cancel=True)

    @app.get("/v1/jobs/{job_id}", responses={202: {"description": "Still grading."}})
    async def job(request: Request, course: Course, job_id: str,
                  wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0) -> JSONResponse:
        """A grade asked for earlier, by the id a 202 gave."""
        found = await asyncio.to_thread(jobs.queue(connection).fetch_job, job_id)
        if found is None or found.meta.get("course") != course:
            raise HTTPException(404, "No such grading job for this course (grades are kept a day).")
        log.info("polls job %s", job_id)
        return await answer(request, job_id, wait, cancel=False)

    async def answer(request: Request, job_id: str, wait: float, cancel: bool) -> JSONResponse:
        """Wait up to `wait` s for the job: its results.json; 202 if not done. If the client goes
        away first, `cancel` stops the job (its submitter left; a poller leaving does not)."""
        deadline = time.monotonic() + wait
        while True:
            status, result = await asyncio.to_thread(state, connection, job_id)
            if status == JobStatus.FINISHED and result != jobs.CANCELLED:
                return JSONResponse(result)
            if result == jobs.CANCELLED:
                status = JobStatus.CANCELED
            if status is None or status in ENDED_UNGRADED:
                raise HTTPException(503, f"{UNGRADED[status]}: this is not your grade, and nothing is lost. "
                                         "Submit again later, or ask your instructor.")
            if time.monotonic() >= deadline:
                return JSONResponse({"id": job_id, "status": status.value, "url": f"/v1/jobs/{job_id}"},
                                    status_code=202)
            if await request.is_disconnected():
                if cancel:
                    log.info("the client went away: the job is cancelled")
                    await asyncio.to_thread(jobs.cancel, connection, job_id)
                return JSONResponse({"detail": "the client went away"}, status_code=499)
            await asyncio.sleep(POLL)

    return app


def state(connection: Redis, job_id: str) -> tuple[JobStatus | None, object]:
    job = jobs.queue(connection).fetch_job(job_id)
    if job is None:
        return None, None
    status = job.get_status()
    return status, job.return_value() if status == JobStatus.FINISHED else None


def admit(connection: Redis, course: str, student: str, settings: Settings) -> bool:
    """Count one submission of `student` in the current window; False once over the limit."""
    window = int(time.time()) // settings.rate_window
    key = f"bpflab:rate:{course}:{student}:{window}"
    with connection.pipeline() as pipe:
        count, _ = pipe.incr(key).expire(key, settings.rate_window).execute()
    return count <= settings.rate_limit


def sweep(connection: Redis) -> None:
    """One clean-up, under RQ's maintenance lock: workers clean the same registry under it, and
    two clean-ups at once would both requeue an abandoned job (graded twice)."""
    queue = jobs.queue(connection)
    if queue.acquire_maintenance_lock():
        try:
            StartedJobRegistry(queue=queue).cleanup()
        finally:
            queue.release_maintenance_lock()


async def sweep_abandoned(connection: Redis) -> None:
    """Now and then, hand the jobs of dead workers to RQ's clean-up: run again, or failed."""
    while True:
        with contextlib.suppress(Exception):  # a broker that is down now may be back next time
            await asyncio.to_thread(sweep, connection)
        await asyncio.sleep(CLEANUP_EVERY)


def run(host: str, port: int, redis_url: str | None, job_count: int, tokens: Path,
        rate_limit: int = RATE_LIMIT, rate_window: int = RATE_WINDOW) -> int:
    """Serve until SIGTERM or Ctrl-C; then the workers finish their grades and everything stops.

    uvicorn answers the requests under way for up to SHUTDOWN_GRACE s, then raises the signal
    again with the handler it found: SIGTERM must then be an exception (KeyboardInterrupt), not
    the default death, so that the `with` blocks stop the workers and the private Redis.
    """
    import uvicorn

    from grader.broker import private_redis, wait_for, workers

    setup_logging()
    settings = Settings("", read_tokens(tokens), rate_limit, rate_window)
    with contextlib.ExitStack() as stack:
        settings.redis_url = redis_url or stack.enter_context(private_redis())
        wait_for(settings.redis_url)
        stack.enter_context(workers(settings.redis_url, job_count))
        log.info("grading on %s with %d local workers; API docs at http://%s:%d/docs",
                 settings.redis_url, job_count, host, port)
        with sigterm_as_interrupt(), contextlib.suppress(KeyboardInterrupt):
            uvicorn.run(create_app(settings), host=host, port=port, access_log=False, log_config=None,
                        timeout_graceful_shutdown=SHUTDOWN_GRACE)
        log.info("stopping: each worker finishes the grade it runs")
    return 0
