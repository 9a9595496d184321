"""The grading service for real: `grader serve` in a namespace of its own (tests/service.py), RQ
workers, Redis, real grades, and clients in another namespace sending what a class sends at a
deadline. Workers and the broker are the service's own children, or the test's.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from redis import Redis
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from bpflab.course.labs import ROOT, all_labs, load_lab
from bpflab.course.starters import starter_source
from bpflab.processes import die_with_parent, stop
from bpflab.topology import Topology, in_netns, socket_in
from grader import jobs
from grader.broker import private_redis
from grader.serve import add_token
from tests.conftest import run_grader
from tests.hostile import CASES, LAB, SLOW
from tests.service import WAIT, Service, grading_children, grading_under, running_service, wait_until
from tests.test_gradescope import LAB as GRADESCOPE_LAB
from tests.test_gradescope import gradescope_root, results_of, run_autograder

# What cannot travel as one file over HTTP: a symlink and an empty folder (tests/test_batch.py).
NOT_A_FILE = {"symlink-outside", "empty-folder"}
ANSIBLE_ENV = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "provisioning" / "ansible.cfg")}


def valid_results(results: dict) -> bool:
    """Gradescope's results.json: a score, and tests that each name a score, a maximum and who sees it."""
    return (isinstance(results.get("score"), (int, float)) and isinstance(results.get("tests"), list)
            and all({"name", "score", "max_score", "output", "visibility"} <= set(test)
                    for test in results["tests"]))


def class_at_the_deadline(tmp_path: Path, size: int) -> list[tuple[str, str, bytes, float | None, str]]:
    """(student, lab, file, score it must get or None for full marks, words it must say): every
    lab's reference and starter, the hostile set, and hello-xdp references up to `size`."""
    sent = []
    for lab in all_labs():
        reference = lab.reference.read_text()
        sent.append((f"ref-{lab.id}", lab.id, reference.encode(), None, ""))
        sent.append((f"starter-{lab.id}", lab.id, starter_source(reference).encode(), 0, ""))
    for name, case in CASES.items():
        if name in NOT_A_FILE:
            continue
        folder = tmp_path / name
        folder.mkdir()
        case.make(folder)
        says = re.sub(r"longer than \d+ s", "longer than", case.says)  # the limit grows on a slow host
        sent.append((name, LAB.id, (folder / LAB.program).read_bytes(), case.score, says))
    reference = LAB.reference.read_bytes()
    sent += [(f"student-{i}", LAB.id, reference, None, "") for i in range(size - len(sent))]
    return sent


@pytest.fixture(scope="module")
def net() -> Iterator[Topology]:
    with Topology(peer_xdp=False) as topology:
        yield topology


@pytest.fixture(scope="module")
def service(net, tmp_path_factory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("service")
    with running_service(net, folder, "--jobs", "2", "--rate-limit", "3") as running:
        yield running


def test_fifty_submissions_at_once_each_get_the_grade_grader_grade_gives(service, tmp_path):
    """50 at once with two workers: references full marks (hidden tests counted, shown after
    publication), starters and the hostile set 0 with their reasons, every answer a results.json."""
    sent = class_at_the_deadline(tmp_path, 50)
    start = time.monotonic()
    with ThreadPoolExecutor(len(sent)) as pool:
        answers = list(pool.map(lambda s: service.post(s[1], s[0], s[2]), sent))
    seconds = time.monotonic() - start
    print(f"{len(sent)} submissions graded in {seconds:.0f} s with 2 workers: "
          f"{len(sent) / seconds * 60:.1f} per minute")
    for (student, lab_id, _, score, says), answer in zip(sent, answers, strict=True):
        assert answer.status_code == 200, (student, answer.text)
        results = answer.json()
        assert valid_results(results), (student, results)
        lab = load_lab(lab_id)
        assert results["max_score"] == lab.points, (student, results["max_score"])
        assert results["score"] == (lab.points if score is None else score), (student, results)
        hidden = [test for test in results["tests"] if test["visibility"] == "after_published"]
        assert sum(test["max_score"] for test in hidden) == lab.hidden_points, (student, hidden)
        assert says in json.dumps(results, ensure_ascii=False).replace("\\\"", "\""), (student, results)
    graded = Counter(line.split("[")[1].split("]")[0] for line in service.lines(r"grader\.jobs: graded "))
    assert len(graded) == len(sent) and set(graded.values()) == {1}, "each submission graded once"


def test_a_wrong_token_an_oversized_file_and_a_student_over_the_limit_are_refused(service):
    reference = LAB.reference.read_bytes()
    assert service.post(LAB.id, "mallory", reference, token="not-a-token").status_code == 401
    too_large = service.post(LAB.id, "mallory", reference + b"/*" + b"x" * 200_000 + b"*/\n")
    assert too_large.status_code == 413 and "KiB" in too_large.json()["detail"]
    with in_netns(service.netns), httpx.Client(timeout=30) as client:  # no Content-Length to go by
        chunked = client.post(f"{service.url}/v1/grade", headers={"Authorization": f"Bearer {service.token}"},
                              content=(b"x" * 50_000 for _ in range(3)))
    assert chunked.status_code == 413, chunked.text
    # Both a small Content-Length and a chunked body (the server reads the chunks): still counted.
    host, port = service.url.removeprefix("http://").split(":")
    with socket_in(service.netns, socket.AF_INET, socket.SOCK_STREAM) as raw:
        raw.settimeout(30)
        raw.connect((host, int(port)))
        raw.sendall(b"POST /v1/grade HTTP/1.1\r\nHost: grader\r\nContent-Length: 10\r\n"
                    b"Transfer-Encoding: chunked\r\nContent-Type: multipart/form-data; boundary=b\r\n\r\n"
                    + b"".join(b"c350\r\n" + b"x" * 50_000 + b"\r\n" for _ in range(3)) + b"0\r\n\r\n")
        assert raw.recv(100).split(b" ")[1] in (b"400", b"413")  # refused either way, never read whole
    unknown = service.post(LAB.id, "mallory", reference, wait=0)
    assert unknown.status_code == 202, unknown.text
    more = [service.post(LAB.id, "mallory", reference, wait=0).status_code for _ in range(3)]
    assert more == [202, 202, 429]  # the rate limit is 3 per window here
    polled = service.get(f"{unknown.json()['url']}?wait={WAIT}")
    assert polled.status_code == 200 and polled.json()["score"] == LAB.points, polled.text


def test_the_api_is_described_by_openapi_and_lists_the_labs(service):
    paths = service.get("/openapi.json").json()["paths"]
    assert {"/v1/grade", "/v1/jobs/{job_id}", "/v1/labs", "/health"} <= set(paths)
    labs = service.get("/v1/labs").json()
    assert [lab["id"] for lab in labs] == [lab.id for lab in all_labs()]
    assert service.get("/health").json()["workers"] == 2


def test_a_client_that_goes_away_mid_grade_stops_its_grade_and_leaves_nothing(service):
    """A compile that would run to its limit (30 s and more), its client gone once it runs: the
    grade stops within seconds and its namespaces go with it (the autouse check)."""
    with ThreadPoolExecutor(1) as pool:
        leaving = pool.submit(service.post, LAB.id, "leaver", (SLOW + LAB.reference.read_text()).encode(),
                              timeout=8)
        assert wait_until(grading_children, 6), "the grade never started"
        with pytest.raises(httpx.TimeoutException):
            leaving.result()
    assert wait_until(lambda: not grading_children(), 20), "the grade went on after its client left"
    assert service.lines("the client went away") and service.lines("cancelled: nobody waits for it"), \
        service.log.read_text()[-2000:]


def test_a_stopped_service_answers_what_it_grades_then_leaves_nothing(tmp_path):
    """SIGTERM while a grade runs: the request under way gets its grade, the workers and the
    private Redis stop, and nothing is left (its broker folder, namespaces)."""
    with Topology(peer_xdp=False) as net, running_service(net, tmp_path, "--jobs", "1") as service, \
            ThreadPoolExecutor(1) as pool:
        answer = pool.submit(service.post, LAB.id, "last-minute", LAB.reference.read_bytes())
        assert wait_until(grading_children, 30), "the grade never started"
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(60) == 0, service.log.read_text()[-2000:]
        assert answer.result().status_code == 200 and answer.result().json()["score"] == LAB.points
    broker = re.search(r"grading on unix://(\S+)/redis\.sock", service.log.read_text()).group(1)
    assert not Path(broker).exists() and not grading_children()
    assert service.lines("stopping: each worker finishes the grade it runs")


def test_two_workers_one_killed_mid_run_every_submission_answered_once(tmp_path):
    """Two workers behind one broker; one is SIGKILLed (its grade dies with it) while 50 are
    under way: RQ finds the job lost and runs it again, and every submission gets one answer.
    Mostly question sets (1.5 s a grade, against hello-xdp's 4): the lost job is seen only 65 s
    after the kill, and CI's time is counted. A network of its own: the module's service holds
    the other one's address."""
    measure = load_lab("measure")
    sent = [(LAB, LAB.reference.read_bytes())] * 6 + [(measure, measure.reference.read_bytes())] * 44
    with Topology(peer_xdp=False) as net, private_redis() as url, \
            running_service(net, tmp_path, "--redis", url, "--jobs", "0", ready=503) as service:
        logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
        workers = [subprocess.Popen([sys.executable, "-m", "grader", "worker", "--redis", url], cwd=ROOT,
                                    stdin=subprocess.DEVNULL, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                    preexec_fn=die_with_parent, start_new_session=True) for log in logs]
        try:
            with ThreadPoolExecutor(len(sent)) as pool:
                answers = pool.map(lambda i: service.post(sent[i][0].id, f"student-{i}", sent[i][1]),
                                   range(len(sent)))
                victim = workers[0]
                assert wait_until(lambda: grading_under(victim.pid), 120), "the victim never graded"
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                answers = list(answers)
            # A job that fails on every worker (here: a lab no worker knows, put on the queue
            # behind the service's back) runs twice, then gets a plain-words 503, not a score.
            jobs.enqueue(Redis.from_url(url), "failing-job", "no-such-lab", b"x", "test-course")
            failed = service.get(f"/v1/jobs/failing-job?wait={WAIT}")
            # Whoever can write to the broker names any function in a job: a worker runs none.
            canary = tmp_path / "made-by-a-job"
            foreign = Queue(jobs.QUEUE, connection=Redis.from_url(url), serializer=JSONSerializer)
            smuggled = foreign.enqueue("os.mkdir", str(canary))
            assert wait_until(lambda: smuggled.get_status(refresh=True) == JobStatus.FAILED, 30)
            assert not canary.exists(), "a worker ran a function that is not grade_job"
        finally:
            for worker in workers:
                stop(worker, grace=60)
        wrong = [answer.text for (lab, _), answer in zip(sent, answers, strict=True)
                 if answer.status_code != 200 or answer.json()["score"] != lab.points]
        assert not wrong, wrong[:3]
        worker_log = "".join(log.read_text() for log in logs)
        graded = Counter(re.findall(r"\[(\w+)\] grader\.jobs: graded ", worker_log))
        started = Counter(re.findall(r"\[(\w+)\] grader\.jobs: grading ", worker_log))
        assert len(graded) == len(sent) and set(graded.values()) == {1}
        lost = re.findall(r"\[(\w+)\] grader\.jobs: grading ", logs[0].read_text())[-1]
        assert started[lost] == 2 and graded[lost] == 1, "the killed worker's job ran again, once"
        assert failed.status_code == 503 and "failed twice" in failed.json()["detail"], failed.text
        assert not list(Path(tempfile.gettempdir()).glob("bpflab-job-*")), "the killed grade's folder stayed"
        assert len(re.findall(r"bpflab-grade: no-such-lab .*\(failing-job\)", worker_log)) == 2


def test_gradescopes_autograder_without_capabilities_gets_what_grader_grade_gives(service, net, tmp_path):
    """run_autograder as Gradescope runs it (an /autograder-shaped root, CAP_NET_ADMIN, CAP_BPF and
    CAP_SYS_ADMIN dropped), against the real service: the same results.json as `grader grade`."""
    lab = load_lab(GRADESCOPE_LAB)
    root = gradescope_root(tmp_path / "gradescope", service.url, timeout=WAIT,
                           files={lab.program: lab.reference.read_text()}, token=service.token)
    done = run_autograder(root, net.client.netns)
    assert done.returncode == 0 and "probe: remote" in done.stderr, done.stderr
    assert results_of(root) == run_grader(None, lab.id, tmp_path).results


def test_grade_service_yml_installs_a_service_that_grades(net, tmp_path):
    """The playbook applied to this machine (provision=false: site.yml has run): twice, the second
    run changing nothing; then the unit's own command, with its env file and tokens file, serves
    in a namespace of the test's, with a Redis there where the env file says."""
    inventory = tmp_path / "service.ini"
    inventory.write_text("[grade_service]\nlocalhost ansible_connection=local "
                         "ansible_python_interpreter=/usr/bin/python3\n")
    play = ["ansible-playbook", "-i", str(inventory), "provisioning/grade_service.yml", "-e",
            "provision=false start_units=false"]  # nothing of it may keep running on this machine
    for _ in range(2):
        done = subprocess.run(play, cwd=ROOT, env=ANSIBLE_ENV, capture_output=True, text=True, timeout=300,
                              check=False)
        assert done.returncode == 0, done.stdout[-3000:]
    assert re.search(r"changed=0 .*failed=0", done.stdout), done.stdout[-3000:]
    unit_path = Path("/etc/systemd/system/bpflab-grade-service.service")
    verified = subprocess.run(["systemd-analyze", "verify", str(unit_path)], capture_output=True, text=True,
                              check=False)
    assert verified.returncode == 0 and unit_path.name not in verified.stderr, verified.stderr
    unit = dict(re.findall(r"^(\w+)=(.+)$", unit_path.read_text(), re.M))
    env_file = Path(unit["EnvironmentFile"])
    assert env_file.stat().st_mode & 0o077 == 0  # it may hold the broker's password
    argv = unit["ExecStart"].split()
    tokens = Path(argv[argv.index("--tokens") + 1])
    kept = tokens.read_bytes()
    service = Service("http://127.0.0.1:8740", add_token(tokens, "playbook-check"), tmp_path / "unit.log",
                      net.server.netns)
    inside = ["nsenter", f"--net=/run/netns/{net.server.netns}"]
    redis = subprocess.Popen([*inside, "redis-server", "--bind", "127.0.0.1", "--save", ""],  # port 6379
                             stdout=subprocess.DEVNULL, preexec_fn=die_with_parent)
    broker = dict([env_file.read_text().strip().split("=", 1)])
    served = subprocess.Popen([*inside, *argv], cwd=unit["WorkingDirectory"], env={**os.environ, **broker},
                              stdout=service.log.open("w"), stderr=subprocess.STDOUT,
                              preexec_fn=die_with_parent)
    try:
        service.wait_until_ready(served)
        assert len(service.get("/v1/labs").json()) == len(all_labs())
    finally:
        stop(served, grace=60)
        stop(redis)
        tokens.write_bytes(kept)
