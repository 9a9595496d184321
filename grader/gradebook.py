"""The class's outputs, made from every student's grades: CSV gradebook, JUnit XML, summary PNG.

They are written from the per-student records (`<student>/grades.json`) alone, so a batch and a
merge of sharded batches write them the same way, and equal grades give equal files.
The JUnit XML is built with the standard library's ElementTree: the format is four elements,
and pytest's own junitxml writer only serves a pytest run, not a class of them.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from bpflab.course.labs import all_labs
from grader.report import from_record
from grader.runner import LabResult

RECORD = "grades.json"
GRADEBOOK = "gradebook.csv"
JUNIT = "junit.xml"
SUMMARY = "summary.png"

Grades = dict[str, list[LabResult]]  # student → their graded labs


def read_grades(out: Path) -> Grades:
    """Every student's grades under `out`, from their records."""
    grades = {}
    for path in sorted(out.glob(f"*/{RECORD}")):
        data = json.loads(path.read_text())
        grades[data["student"]] = [from_record(lab, path.parent) for lab in data["labs"]]
    return grades


def lab_ids(grades: Grades) -> list[str]:
    """The labs graded for anyone, in course order."""
    graded = {r.lab.id for results in grades.values() for r in results}
    return [lab.id for lab in all_labs() if lab.id in graded]


def write_class(out: Path) -> Grades:
    """Write the gradebook, the JUnit XML and the summary picture for the grades under `out`."""
    grades = read_grades(out)
    write_gradebook(grades, out / GRADEBOOK)
    write_junit(grades, out / JUNIT)
    write_summary(grades, out / SUMMARY)
    return grades


def write_gradebook(grades: Grades, path: Path) -> None:
    """One row per student, one column per lab (blank: not submitted), and the total."""
    labs = lab_ids(grades)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", *labs, "total"])
        for student, results in sorted(grades.items()):
            scores = {r.lab.id: r.score for r in results}
            writer.writerow([student, *(f"{scores[lab]:g}" if lab in scores else "" for lab in labs),
                             f"{sum(scores.values()):g}"])


def write_junit(grades: Grades, path: Path) -> None:
    """One test suite per student and lab, one test case per graded test, failures explained."""
    suites = ET.Element("testsuites", name="bpflab")
    for student, results in sorted(grades.items()):
        for result in results:
            failed = [t for t in result.tests if t.mark == "FAIL"]
            suite = ET.SubElement(suites, "testsuite", name=f"{student}/{result.lab.id}",
                                  tests=str(len(result.tests)), failures=str(len(failed)))
            for test in result.tests:
                case = ET.SubElement(suite, "testcase", classname=f"{student}.{result.lab.id}",
                                     name=test.nodeid.rsplit("::", 1)[-1])
                ET.SubElement(case, "properties").extend([
                    ET.Element("property", name="score", value=f"{test.score:g}"),
                    ET.Element("property", name="max_score", value=f"{test.max_score:g}"),
                    ET.Element("property", name="hidden", value=str(test.hidden).lower()),
                ])
                message = test.output.splitlines()[0] if test.output else "failed"
                if test.mark == "FAIL":
                    ET.SubElement(case, "failure", message=message).text = test.output
                elif test.informational and test.output:  # a figure that could not be measured
                    ET.SubElement(case, "skipped", message=message).text = test.output
    ET.indent(suites)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def write_summary(grades: Grades, path: Path) -> None:
    """Per lab: a histogram of the scores (top) and the pass rate of each test (bottom)."""
    labs = lab_ids(grades)
    figure, axes = plt.subplots(2, max(len(labs), 1), figsize=(6 * max(len(labs), 1), 9), squeeze=False)
    for column, lab in enumerate(labs):
        results = [r for rs in grades.values() for r in rs if r.lab.id == lab]
        top, bottom = axes[0][column], axes[1][column]
        most = results[0].max_score
        top.hist([r.score for r in results], bins=min(int(most) + 1, 26), range=(0, most))
        top.set(title=f"{lab}: scores of {len(results)} students", xlabel=f"score (of {most:g})",
                ylabel="students")
        names = [t.nodeid.rsplit("::", 1)[-1].removeprefix("test_") for t in results[0].tests]
        rates = [100 * sum(r.tests[i].passed for r in results) / len(results) for i in range(len(names))]
        bottom.barh(names, rates)
        bottom.invert_yaxis()
        bottom.set(title=f"{lab}: pass rate per test", xlabel="% of students", xlim=(0, 100))
        bottom.tick_params(axis="y", labelsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
