"""`python -m grader gradescope LAB`: the zip that makes a lab a Gradescope programming assignment.

Gradescope's spec: a zip with `setup.sh` (run once, as root, to build the autograder's image) and
`run_autograder` (run for each submission) at its top level, unpacked in /autograder/source. Ours
adds `autograder.py` (grader/autograder.py: stdlib-only, since the image has no course) and
`config.json` (the lab, its program file, the grading service's URL and token). Gradescope's own
runners cannot load XDP/TC programs (their containers lack CAP_SYS_ADMIN and CAP_NET_ADMIN), so
the autograder grades on the service (`python -m grader serve`); `--bundle-course` also puts the
instructor's checkout in `course/`, provisioned by setup.sh, for a self-hosted privileged runner
that can grade in the container itself, with the service still there if it cannot.

The zip holds the service's token, and with the course the hidden tests and answer keys: it is
for the course's Gradescope only, written readable by its owner alone. The token is read from a
file, never from the command line, where `ps` shows it to every user of the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.parse
import zipfile
from pathlib import Path

from bpflab.course.labs import ROOT, load_lab

AUTOGRADER = Path(__file__).with_name("autograder.py")
DEFAULT_TIMEOUT = 900  # s: the autograder's whole run; Gradescope's own timeout must be longer
STAMP = (1980, 1, 1, 0, 0, 0)  # every entry's date: zip's earliest
EXECUTABLE, REGULAR = 0o100755, 0o100644

RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this for each submission (as /autograder/run_autograder). autograder.py always
# writes /autograder/results/results.json and exits 0. AUTOGRADER_ROOT moves /autograder, for tests.
exec python3 "${AUTOGRADER_ROOT:-/autograder}/source/autograder.py"
"""

SETUP = """\
#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image. The autograder
# needs only Python 3.8+ and the CA certificates that check the grading service's TLS.
set -u
export DEBIAN_FRONTEND=noninteractive
if ! command -v python3 >/dev/null || [ ! -e /etc/ssl/certs/ca-certificates.crt ]; then
    apt-get update -q && apt-get install -y -q --no-install-recommends python3 ca-certificates || exit 1
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 8))'; then
    echo "setup.sh: $(python3 --version) is older than 3.8: choose the Ubuntu 22.04 base image" >&2
    exit 1
fi
"""

SETUP_COURSE = """
# The course is bundled in course/: provision it (the course's Ansible playbook, the labs' own
# install), so that a self-hosted runner privileged enough grades in the container. The playbook
# supports Debian 12+ and Ubuntu 24.04+; where it fails, run_autograder grades on the service.
course=/autograder/source/course
if apt-get install -y -q --no-install-recommends make sudo \\
        && make -C "$course" provision PLAYBOOK_VARS="-e install_dev_tools=false"; then
    echo "setup.sh: the course is provisioned in $course: a runner with CAP_SYS_ADMIN and" \
         "CAP_NET_ADMIN grades in the container"
else
    echo "setup.sh: provisioning the course in $course failed (above):" \
         "run_autograder will grade on the service" >&2
fi
exit 0
"""


def check_service(url: str) -> str:
    """The service's base URL without a trailing slash; ValueError unless http(s)://host[/path]."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"{url!r} is not a service URL like https://grade.example.edu")
    return url.strip().rstrip("/")


def check_token(token: str) -> str:
    token = token.strip()
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise ValueError("the token must be one line of printable characters without spaces")
    return token


def course_files() -> list[str]:
    """The instructor checkout's git-tracked files (hidden tests and answer keys included)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(f"bundling the course needs its git checkout ({ROOT}): {exc}") from None
    return sorted(name for name in listed.stdout.decode().split("\0") if name and (ROOT / name).is_file())


def add(archive: zipfile.ZipFile, name: str, data: bytes, mode: int = REGULAR) -> None:
    """One entry: dated STAMP (the same inputs give the same zip), with its Unix mode."""
    entry = zipfile.ZipInfo(name, date_time=STAMP)
    entry.external_attr = mode << 16
    entry.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(entry, data)


def build(lab_id: str, service_url: str, token: str, out: Path, bundle_course: bool = False,
          timeout: int = DEFAULT_TIMEOUT) -> Path:
    """Write the lab's Gradescope autograder zip to `out` (mode 0600: it holds the token)."""
    lab = load_lab(lab_id)  # KeyError naming the known labs
    config = {"lab": lab.id, "program": lab.program, "service_url": check_service(service_url),
              "token": check_token(token), "timeout": int(timeout)}
    if config["timeout"] < 30:
        raise ValueError("the timeout must be at least 30 s: a grade takes about a minute")
    files = course_files() if bundle_course else []
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w") as archive:
            add(archive, "setup.sh", (SETUP + (SETUP_COURSE if bundle_course else "")).encode(), EXECUTABLE)
            add(archive, "run_autograder", RUN_AUTOGRADER.encode(), EXECUTABLE)
            add(archive, "autograder.py", AUTOGRADER.read_bytes())
            add(archive, "config.json", (json.dumps(config, indent=2) + "\n").encode())
            for name in files:
                path = ROOT / name
                add(archive, f"course/{name}", path.read_bytes(),
                    EXECUTABLE if path.stat().st_mode & 0o111 else REGULAR)
    except BaseException:
        part.unlink(missing_ok=True)  # no half-written zip left to upload
        raise
    os.chmod(part, 0o600)  # O_CREAT's mode applies only to a new file
    os.replace(part, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader gradescope",
                                     description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("lab", help="lab id, e.g. xdp-icmp (see `python -m grader list`)")
    parser.add_argument("--service", required=True, help="the grading service's URL, e.g. https://grade.example.edu")
    parser.add_argument("--token-file", type=Path, required=True,
                        help="file holding the course's bearer token for the service (one line)")
    parser.add_argument("--bundle-course", action="store_true",
                        help="also put this checkout in course/, for a self-hosted privileged runner")
    parser.add_argument("--out", type=Path, help="the zip (default: dist/gradescope/LAB.zip)")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT,
                        help="seconds the autograder waits for a grade (default %(default)s); set "
                             "Gradescope's autograder timeout a few minutes longer")
    args = parser.parse_args(argv)
    try:
        token = args.token_file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        parser.error(f"cannot read the token file: {exc}")
    if args.token_file.stat().st_mode & 0o077:
        print(f"warning: {args.token_file} is readable by others than its owner (chmod 600 it)",
              file=sys.stderr)
    if args.service.strip().startswith("http://"):
        print("warning: the service URL is plain http: the token and submissions cross the network "
              "unencrypted; put the service behind TLS (README: Grading on Gradescope)", file=sys.stderr)
    out = args.out or ROOT / "dist" / "gradescope" / f"{args.lab}.zip"
    try:
        path = build(args.lab, args.service, token, out, args.bundle_course, args.timeout)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    except (ValueError, RuntimeError) as exc:
        parser.error(str(exc))
    lab = load_lab(args.lab)
    print(f"{path}: Gradescope autograder for {lab.id} ({lab.title}); students submit {lab.program}")
    print(f"Upload it in the assignment's Configure Autograder page, and set its timeout above "
          f"{args.timeout // 60 + 5} minutes.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
