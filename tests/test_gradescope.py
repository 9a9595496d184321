"""The Gradescope autograder: the zip to Gradescope's spec, and run_autograder run as Gradescope runs
it (an /autograder-shaped root, the system's python3, no course, CAP_SYS_ADMIN, CAP_NET_ADMIN and
CAP_BPF dropped with capsh), against a service that is down or a small HTTP server of the test's
that answers each way a real one might, in the server namespace of a topology.
"""

from __future__ import annotations

import ast
import base64
import email.parser
import email.policy
import json
import shutil
import stat
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from bpflab.course.labs import ROOT, load_lab
from bpflab.services.netns_server import NetnsServer
from bpflab.topology import Topology
from grader import autograder, gradescope

LAB = "xdp-icmp"
PROGRAM = load_lab(LAB).program
TOKEN = "s3cret-token-for-tests"
PORT = 8080
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # the system's python3, not the course's venv
CAPSH = shutil.which("capsh", path=SYSTEM_PATH) or "capsh (Debian's libcap2-bin) is not installed"
# As root, --drop takes the capabilities out of the bounding set only: a capability still in the
# inheritable (or ambient) set would come back at exec, so those are emptied too.
DROP = ["--drop=cap_net_admin,cap_bpf,cap_sys_admin", "--inh=", "--noamb", "--"]
CAP_BPF = 39
STUDENT = "ada@example.edu"
RESULTS = {"score": 7.0, "max_score": 10.0, "output": "xdp-icmp: 7/10",
           "tests": [{"name": "echoes a ping", "score": 7.0, "max_score": 10.0, "status": "passed",
                      "output": "", "visibility": "visible"}]}
DOCKER_STATUS = "Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\n"  # Docker's defaults
UNAVAILABLE = "Grading is unavailable right now"
ROOT_STATUS = "Name:\tpython3\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n"

# A stand-in for the grading service, one behaviour per first path segment of the URL it is
# given (service_url = http://server:8080/<mode>): every request is logged as a JSON line.
SERVICE = r'''
import base64, json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

address, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
results = json.loads(sys.argv[4])
polls = {}


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, body, content_type="application/json", headers=()):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def handle_one(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length) if length else b""
        with open(log, "a") as out:
            out.write(json.dumps({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                  "body": base64.b64encode(body).decode()}) + "\n")
        mode = self.path.split("/")[1]
        if mode == "valid":
            self.answer(200, results)
        elif mode == "garbage":
            self.answer(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        elif mode == "notresults":
            self.answer(200, {"score": "full marks", "tests": "all"})
        elif mode == "nothttp":
            self.wfile.write(b"SSH-2.0-OpenSSH_9.2\r\n")
            self.close_connection = True
        elif mode == "busy":
            self.answer(503, {"detail": "All graders are busy; try again in a few minutes."},
                        headers=[("Retry-After", "120")])
        elif mode == "large":
            self.answer(413, {"detail": "The file is larger than 64 KiB, the limit for a program file."})
        elif mode == "ratelimited":
            self.answer(429, {"detail": "5 submissions in 10 minutes is the limit."},
                        headers=[("Retry-After", "300")])
        elif mode == "token":
            self.answer(401, {"detail": "Invalid token."})
        elif mode == "redirect":
            self.send_response(302)
            self.send_header("Location", "/valid/v1/grade")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode in ("queued", "offsite") and self.command == "POST":
            url = "/queued/v1/jobs/j1" if mode == "queued" else "http://198.51.100.7/v1/jobs/j1"
            self.answer(202, {"id": "j1", "url": url})
        elif mode == "queued":
            polls[self.path] = polls.get(self.path, 0) + 1
            self.answer(200, results) if polls[self.path] > 2 else self.answer(202, {"status": "queued"})
        elif mode == "slow":
            time.sleep(30)
        else:
            self.answer(404, {"detail": "Not Found"})

    do_GET = do_POST = handle_one


server = ThreadingHTTPServer((address, port), Handler)
server.daemon_threads = True
print("ready", flush=True)
server.serve_forever()
'''


# -- the zip ----------------------------------------------------------------------------------------
def build(tmp_path: Path, **kwargs: object) -> zipfile.ZipFile:
    out = gradescope.build(LAB, "https://grade.example.edu/", TOKEN + "\n", tmp_path / "dist" / "lab.zip",
                           **kwargs)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it holds the token
    return zipfile.ZipFile(out)


def mode_of(archive: zipfile.ZipFile, name: str) -> int:
    return archive.getinfo(name).external_attr >> 16


def test_the_zip_holds_gradescopes_files_at_its_top_level(tmp_path):
    archive = build(tmp_path)
    assert sorted(archive.namelist()) == ["autograder.py", "config.json", "run_autograder", "setup.sh"]
    assert mode_of(archive, "run_autograder") == 0o100755
    assert mode_of(archive, "setup.sh") == 0o100755
    assert mode_of(archive, "config.json") == 0o100644
    assert json.loads(archive.read("config.json")) == {
        "lab": LAB, "program": "xdp_icmp_echo.c", "service_url": "https://grade.example.edu",
        "token": TOKEN, "timeout": 900}
    assert archive.read("autograder.py") == (ROOT / "grader" / "autograder.py").read_bytes()
    run = archive.read("run_autograder").decode()
    assert run.startswith("#!/usr/bin/env bash\n")
    assert 'exec python3 "${AUTOGRADER_ROOT:-/autograder}/source/autograder.py"' in run
    setup = archive.read("setup.sh").decode()
    assert "apt-get install" in setup and "python3" in setup and "provision" not in setup
    for script in ("setup.sh", "run_autograder"):
        (tmp_path / script).write_bytes(archive.read(script))
        assert subprocess.run(["bash", "-n", tmp_path / script], check=False).returncode == 0


def test_a_bundled_course_is_the_checkouts_tracked_files_provisioned_by_setup(tmp_path):
    archive = build(tmp_path, bundle_course=True)
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    course = {name.removeprefix("course/") for name in archive.namelist() if name.startswith("course/")}
    assert course == {name for name in tracked if (ROOT / name).is_file()}
    assert {"Makefile", "provisioning/site.yml", "answer_keys/measure_answers.toml",
            "grader/tests/hidden/test_xdp_icmp_echo_hidden.py"} <= course  # the instructors' zip
    assert mode_of(archive, "course/Makefile") & 0o777 == 0o644
    setup = archive.read("setup.sh").decode()
    assert 'make -C "$course" provision PLAYBOOK_VARS="-e install_dev_tools=false"' in setup
    assert setup.rstrip().endswith("exit 0")  # a runner that cannot provision still grades remotely


def test_build_refuses_an_unknown_lab_a_bad_url_and_a_bad_token(tmp_path):
    with pytest.raises(KeyError, match="no lab called"):
        gradescope.build("no-such-lab", "https://grade.example.edu", TOKEN, tmp_path / "a.zip")
    for url in ("grade.example.edu", "ftp://grade.example.edu", "https://grade.example.edu/?x=1"):
        with pytest.raises(ValueError, match="not a service URL"):
            gradescope.build(LAB, url, TOKEN, tmp_path / "a.zip")
    for token in ("", "two words", "line\nbreak"):
        with pytest.raises(ValueError, match="token"):
            gradescope.build(LAB, "https://grade.example.edu", token, tmp_path / "a.zip")
    assert not list(tmp_path.iterdir())


def test_the_cli_reads_the_token_from_a_file(tmp_path, capsys):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    out = tmp_path / "out" / "xdp-icmp.zip"
    assert gradescope.main([LAB, "--service", "https://grade.example.edu", "--token-file", str(token_file),
                            "--out", str(out), "--timeout", "600"]) == 0
    config = json.loads(zipfile.ZipFile(out).read("config.json"))
    assert (config["token"], config["timeout"]) == (TOKEN, 600)
    printed = capsys.readouterr()
    assert TOKEN not in printed.out + printed.err and "xdp_icmp_echo.c" in printed.out
    with pytest.raises(SystemExit):
        gradescope.main([LAB, "--service", "https://grade.example.edu", "--token", TOKEN])


# -- the autograder's pure parts --------------------------------------------------------------------
def test_the_autograder_is_python_38_and_the_standard_library_only():
    """Gradescope's image has no course and no pip package, and Ubuntu 20.04's python3 is 3.8."""
    tree = ast.parse((ROOT / "grader" / "autograder.py").read_text(), feature_version=(3, 8))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported - {"__future__"} <= sys.stdlib_module_names


def test_the_probe_grades_locally_only_with_the_course_and_the_capabilities(tmp_path):
    course = tmp_path / "course"
    assert autograder.probe(ROOT_STATUS, course).where == "remote"  # no course provisioned
    python = course / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    assert autograder.probe(ROOT_STATUS, course).where == "local"
    docker = autograder.probe(DOCKER_STATUS, course)
    assert docker.where == "remote" and "CAP_SYS_ADMIN and CAP_NET_ADMIN" in docker.why
    no_net_admin = f"CapEff:\t{(1 << 41) - 1 & ~(1 << autograder.CAP_NET_ADMIN):016x}\n"
    lacking = autograder.probe(no_net_admin, course)
    assert lacking.where == "remote" and "lacks CAP_NET_ADMIN (" in lacking.why
    assert autograder.probe("CapEff:\tzz\n", course).where == "remote"
    assert autograder.probe("", course).where == "remote"


def test_what_counts_as_a_results_json():
    assert autograder.valid_results(RESULTS)
    assert autograder.valid_results({"score": 0})
    assert autograder.valid_results({"tests": [{"name": "a", "score": 1, "max_score": 1}]})
    for bad in (None, [], "x", {}, {"tests": []}, {"score": "7"}, {"score": True}, {"score": float("nan")},
                {"score": 1, "tests": "all"}, {"score": 1, "tests": [1]}, {"tests": [{"score": "1"}]},
                {"score": 1, "output": 3}):
        assert not autograder.valid_results(bad), bad


def test_the_fallback_is_zero_and_says_it_is_not_a_grade():
    results = autograder.fallback("the grading service did not answer")
    assert results["score"] == 0 and results["tests"] == [] and autograder.valid_results(results)
    assert f"{UNAVAILABLE} (the grading service did not answer)" in results["output"]
    assert "this is not your grade" in results["output"] and "nothing is lost" in results["output"]
    assert results["extra_data"]["grading_unavailable"]
    large = autograder.fallback("too large", "Over 64 KiB.", 413, PROGRAM)["output"]
    assert f"Make {PROGRAM} smaller" in large and "Over 64 KiB." in large and "not your grade" in large
    wait = autograder.fallback("too many", "5 in 10 minutes.", 429, PROGRAM, "300")["output"]
    assert "Resubmit in a few minutes (the service asks for 300 seconds)" in wait


def test_a_broken_config_still_leaves_a_results_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    assert autograder.main(["--root", str(tmp_path), "--config", str(tmp_path / "config.json")]) == 0
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["score"] == 0 and "Grading is unavailable" in results["output"]


# -- run_autograder, as Gradescope runs it ----------------------------------------------------------
def gradescope_root(tmp_path: Path, service_url: str, timeout: int = 30, files: dict[str, str] | None = None,
                    local_python: str | None = None, token: str = TOKEN) -> Path:
    """A temp root shaped like /autograder: source/ (the zip unpacked), run_autograder (Gradescope
    copies it out of source/), submission/, results/, submission_metadata.json."""
    root = tmp_path / "autograder"
    out = gradescope.build(LAB, service_url, token, tmp_path / "lab.zip", timeout=timeout)
    with zipfile.ZipFile(out) as archive:
        archive.extractall(root / "source")
    config = root / "source" / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"poll_seconds": 0.2}))
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    (root / "run_autograder").chmod(0o755)  # Gradescope's unzip keeps the mode; ZipFile's does not
    files = {PROGRAM: "int xdp_icmp_echo(void) { return 2; }\n"} if files is None else files
    for name, text in files.items():
        (root / "submission" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "submission" / name).write_text(text)
    (root / "submission").mkdir(exist_ok=True)
    (root / "results").mkdir()
    (root / "submission_metadata.json").write_text(json.dumps({"users": [{"email": STUDENT, "id": 17}]}))
    if local_python is not None:  # a course "provisioned" in the image: its venv's python is a stand-in
        python = root / "source" / "course" / ".venv" / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.write_text(local_python)
        python.chmod(0o755)
    return root


def run_autograder(root: Path, netns: str, capped: bool = True,
                   path: str = SYSTEM_PATH) -> subprocess.CompletedProcess:
    """root/run_autograder in `netns`, its capabilities dropped as a Docker container's are; its
    python3 the first on `path`."""
    argv = [str(root / "run_autograder")]
    if capped:
        argv = [CAPSH, *DROP, *argv]  # after `--`, bash's arguments: bash run_autograder
    env = {"PATH": path, "AUTOGRADER_ROOT": str(root), "LANG": "C.UTF-8"}
    done = subprocess.run(["ip", "netns", "exec", netns, *argv], cwd=root, env=env, capture_output=True,
                          text=True, timeout=90, check=False)
    assert TOKEN not in done.stdout + done.stderr
    return done


def results_of(root: Path) -> dict:
    return json.loads((root / "results" / "results.json").read_text())


@pytest.fixture
def topology():
    with Topology(peer_xdp=False) as topo:  # no XDP program needed: plain HTTP over the veth
        yield topo


@pytest.fixture
def service(topology, tmp_path):
    """The stand-in service on the server's address; yields (topology, its base URL, its request log)."""
    script, log = tmp_path / "service.py", tmp_path / "requests.jsonl"
    script.write_text(SERVICE)
    log.touch()
    argv = [sys.executable, str(script), topology.server.ipv4, str(PORT), str(log), json.dumps(RESULTS)]
    with NetnsServer(topology.server.netns, argv, tmp_path / "service.log", "ready"):
        yield topology, f"http://{topology.server.ipv4}:{PORT}", log


def requests_in(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_capsh_really_drops_the_capabilities_so_the_probe_says_remote(tmp_path):
    code = "import sys; sys.stdout.write(open('/proc/self/status').read())"
    done = subprocess.run([CAPSH, *DROP, "-c", f'exec python3 -c "{code}"'],
                          env={"PATH": SYSTEM_PATH}, capture_output=True, text=True, check=True)
    caps = autograder.capabilities(done.stdout)
    assert caps is not None
    assert not any(caps >> bit & 1 for bit in (autograder.CAP_SYS_ADMIN, autograder.CAP_NET_ADMIN, CAP_BPF))
    python = tmp_path / "course" / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    assert autograder.probe(done.stdout, tmp_path / "course").where == "remote"


def test_with_the_service_down_the_fallback_says_grading_is_unavailable(topology, tmp_path):
    root = gradescope_root(tmp_path, f"http://{topology.server.ipv4}:{PORT}")  # nothing listens there
    done = run_autograder(root, topology.client.netns)
    assert done.returncode == 0, done.stderr
    assert "probe: remote" in done.stderr and "lacks CAP_SYS_ADMIN and CAP_NET_ADMIN" in done.stderr
    results = results_of(root)
    assert results["score"] == 0 and results["tests"] == []
    assert results["output"].startswith(f"{UNAVAILABLE} (the grading service is not running")
    assert "this is not your grade" in results["output"] and "nothing is lost" in results["output"]
    assert "connection refused" in done.stderr


def test_the_services_results_are_written_and_the_request_is_what_the_api_says(service, tmp_path):
    topology, url, log = service
    text = "/* nested in a folder, as a zip upload keeps it */\nint xdp_icmp_echo(void) { return 2; }\n"
    root = gradescope_root(tmp_path, f"{url}/valid", files={f"lab3/{PROGRAM}": text, "notes.txt": "hi"})
    done = run_autograder(root, topology.client.netns)
    assert done.returncode == 0, done.stderr
    assert results_of(root) == RESULTS
    [sent] = requests_in(log)
    assert sent["method"] == "POST" and sent["path"].startswith("/valid/v1/grade?wait=")
    assert 0 < int(sent["path"].split("wait=")[1]) <= 30
    assert sent["headers"]["Authorization"] == f"Bearer {TOKEN}"
    head = f"Content-Type: {sent['headers']['Content-Type']}\r\n\r\n".encode()
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    form = parser.parsebytes(head + base64.b64decode(sent["body"]))
    fields = {part.get_param("name", header="content-disposition"): part for part in form.iter_parts()}
    assert fields["lab"].get_content() == LAB and fields["student"].get_content() == STUDENT
    assert fields["file"].get_filename() == PROGRAM and fields["file"].get_content() == text.encode()


def test_a_queued_job_is_polled_until_its_results_come(service, tmp_path):
    topology, url, log = service
    root = gradescope_root(tmp_path, f"{url}/queued")
    done = run_autograder(root, topology.client.netns)
    assert done.returncode == 0, done.stderr
    assert results_of(root) == RESULTS
    sent = requests_in(log)
    assert [r["method"] for r in sent] == ["POST", "GET", "GET", "GET"]
    assert {r["path"] for r in sent[1:]} == {"/queued/v1/jobs/j1"}
    assert all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in sent)


FALLBACKS = dict([
    ("garbage", f"{UNAVAILABLE} (the grading service sent back something that is not a grade)"),
    ("notresults", f"{UNAVAILABLE} (the grading service sent back something that is not"),
    ("nothttp", f"{UNAVAILABLE} (the grading service sent an answer that is not HTTP"),
    ("busy", f"{UNAVAILABLE} (the grading service is busy or stopped): this is not your grade. Your "
             "submission is saved on Gradescope and nothing is lost; your instructor will regrade it, or "
             "resubmit later. The grading service said: All graders are busy; try again in a few minutes."),
    ("token", f"{UNAVAILABLE} (the grading service did not accept this autograder's key)"),
    ("large", "Your submission was not graded: xdp_icmp_echo.c is too large for the grader. The grading "
              "service said: The file is larger than 64 KiB, the limit for a program file. Make "
              "xdp_icmp_echo.c smaller"),
    ("ratelimited", "The grading service said: 5 submissions in 10 minutes is the limit. Resubmit in a few "
                    "minutes (the service asks for 300 seconds). This is not your grade."),
    ("redirect", f"{UNAVAILABLE} (the grading service redirected the autograder"),
    ("offsite", f"{UNAVAILABLE} (the grading service sent a job address on another server)"),
])


@pytest.mark.parametrize("mode", FALLBACKS)
def test_every_answer_but_a_grade_gives_the_fallback(service, tmp_path, mode):
    topology, url, log = service
    words = FALLBACKS[mode]
    root = gradescope_root(tmp_path, f"{url}/{mode}")
    done = run_autograder(root, topology.client.netns)
    assert done.returncode == 0, done.stderr
    results = results_of(root)
    assert results["score"] == 0 and results["tests"] == [], results
    assert words in results["output"], results["output"]
    assert "not your grade" in results["output"] and "nothing is lost" in results["output"]
    assert "fallback results.json" in done.stderr
    assert len(requests_in(log)) == 1  # neither a redirect nor a job on another server is followed


def test_a_service_that_never_answers_gets_the_fallback_within_the_timeout(service, tmp_path):
    topology, url, _ = service
    root = gradescope_root(tmp_path, f"{url}/slow", timeout=30)
    config = root / "source" / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"timeout": 2}))  # below build's minimum
    start = time.monotonic()
    done = run_autograder(root, topology.client.netns)
    assert done.returncode == 0 and time.monotonic() - start < 10, done.stderr
    results = results_of(root)
    assert results["score"] == 0
    assert f"{UNAVAILABLE} (the grading service did not answer within 2 s)" in results["output"]


def test_a_submission_without_the_file_scores_zero_and_names_the_file(topology, tmp_path):
    root = gradescope_root(tmp_path, f"http://{topology.server.ipv4}:{PORT}",
                           files={"xdp_icmp_echo (1).c": "int x;\n", "README.md": "hi\n"})
    done = run_autograder(root, topology.client.netns)
    assert done.returncode == 0, done.stderr
    results = results_of(root)
    assert results["score"] == 0 and "extra_data" not in results  # a grade: the file is not there
    assert results["output"] == (
        "Your submission has no file named xdp_icmp_echo.c, the file this lab grades (you submitted: "
        "README.md, xdp_icmp_echo (1).c). Submit xdp_icmp_echo.c itself, with exactly that name. "
        "Rename xdp_icmp_echo (1).c to xdp_icmp_echo.c and resubmit.")


LOCAL_GRADER = textwrap.dedent(f"""\
    #!/bin/sh
    # The bundled course's grader, as a stand-in: records how it was called, writes a results.json.
    echo "$PWD $*" > "$AUTOGRADER_ROOT/local-grader-called"
    [ -n "$FAIL" ] && exit 1
    while [ "$1" != "--results" ]; do shift; done
    echo '{json.dumps(RESULTS | {"output": "graded locally"})}' > "$2"
    """)


def test_a_privileged_container_with_the_course_grades_locally(topology, tmp_path):
    root = gradescope_root(tmp_path, f"http://{topology.server.ipv4}:{PORT}", local_python=LOCAL_GRADER)
    done = run_autograder(root, topology.client.netns, capped=False)  # root's full set: a privileged runner
    assert done.returncode == 0, done.stderr
    assert "probe: local" in done.stderr
    assert results_of(root)["output"] == "graded locally"
    called = (root / "local-grader-called").read_text().split()
    assert called == [str(root / "source" / "course"), "-m", "grader", "grade", str(root / "submission"),
                      "--lab", LAB, "--results", str(root / "results" / "results.json")]


def test_without_the_capabilities_the_bundled_course_is_not_used(topology, tmp_path):
    root = gradescope_root(tmp_path, f"http://{topology.server.ipv4}:{PORT}", local_python=LOCAL_GRADER)
    done = run_autograder(root, topology.client.netns)
    assert "probe: remote" in done.stderr and not (root / "local-grader-called").exists()
    assert results_of(root)["output"].startswith("Grading is unavailable right now")


def test_a_local_grader_that_fails_hands_over_to_the_service(service, tmp_path):
    topology, url, log = service
    failing = LOCAL_GRADER.replace('[ -n "$FAIL" ]', "true")
    root = gradescope_root(tmp_path, f"{url}/valid", local_python=failing)
    done = run_autograder(root, topology.client.netns, capped=False)
    assert done.returncode == 0, done.stderr
    assert (root / "local-grader-called").exists() and "exited with status 1" in done.stderr
    assert results_of(root) == RESULTS and len(requests_in(log)) == 1


OLDEST_PYTHON = Path("/root/.pyenv/versions/3.8.18/bin/python3")  # Ubuntu 20.04's python3 is 3.8


@pytest.mark.skipif(not OLDEST_PYTHON.exists(), reason=f"no {OLDEST_PYTHON} on this machine")
def test_the_autograder_runs_on_python_38(service, tmp_path):
    topology, url, _ = service
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(OLDEST_PYTHON)
    root = gradescope_root(tmp_path, f"{url}/queued")
    done = run_autograder(root, topology.client.netns, path=f"{bin_dir}:{SYSTEM_PATH}")
    assert done.returncode == 0 and results_of(root) == RESULTS, done.stderr
    assert "on Python 3.8.18" in done.stderr
    root = gradescope_root(tmp_path / "busy", f"{url}/busy")
    run_autograder(root, topology.client.netns, path=f"{bin_dir}:{SYSTEM_PATH}")
    assert results_of(root)["output"] == FALLBACKS["busy"]
