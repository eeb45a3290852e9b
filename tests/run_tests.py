"""Runs every Ringway test and prints one closing line, "N passed, N failed".

Called by `zig build test` with the built binaries:
  --unit=PATH      a unit-test executable (repeatable); each prints "N passed, N failed" last;
                   PATH::ARG[::ARG...] also passes arguments (e.g. a fuzz replay's corpus)
  --ringway=PATH   the relay, for the integration tests
  --mock=PATH      the mock upstream, for the integration tests
  --ringctl=PATH   the ops tool, for the integration tests (env RINGCTL_BIN)
Any other argument goes to pytest (e.g. `tools/zig build test -- -k stream`).
"""

import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed\s*$")


def run_unit(spec):
    """Runs one unit-test binary ("PATH" or "PATH::ARG..."); returns (passed, failed).
    A crash counts as one failure."""
    command = spec.split("::")
    name = os.path.basename(command[0])
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    sys.stderr.write(completed.stderr)
    lines = completed.stdout.strip().splitlines()
    match = SUMMARY.match(lines[-1]) if lines else None
    if not match:
        print(f"unit {name}: no summary line (exit {completed.returncode})")
        return 0, 1
    passed, failed = int(match.group(1)), int(match.group(2))
    if completed.returncode != 0 and failed == 0:
        failed = 1
    print(f"unit {name}: {passed} passed, {failed} failed")
    return passed, failed


def run_pytest(ringway, mock, ringctl, extra):
    """Runs tests/integration with pytest; returns (passed, failed) from its JUnit report."""
    env = dict(os.environ, RINGWAY_BIN=ringway, RINGWAY_MOCK_BIN=mock)
    if ringctl:
        env["RINGCTL_BIN"] = ringctl
    with tempfile.TemporaryDirectory() as scratch:
        report = os.path.join(scratch, "report.xml")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   f"--junitxml={report}", "tests/integration", *extra]
        completed = subprocess.run(command, cwd=ROOT, env=env)
        if not os.path.exists(report):
            return 0, 1
        suite = ElementTree.parse(report).getroot()
        if suite.tag == "testsuites":
            suite = suite[0]
        total = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        if completed.returncode not in (0, 1, 5):
            failed = max(failed, 1)
        return total - failed - skipped, failed


def main(argv):
    units, ringway, mock, ringctl, extra = [], None, None, None, []
    for argument in argv:
        if argument.startswith("--unit="):
            units.append(argument[len("--unit="):])
        elif argument.startswith("--ringway="):
            ringway = argument[len("--ringway="):]
        elif argument.startswith("--mock="):
            mock = argument[len("--mock="):]
        elif argument.startswith("--ringctl="):
            ringctl = argument[len("--ringctl="):]
        else:
            extra.append(argument)
    passed = failed = 0
    for path in units:
        unit_passed, unit_failed = run_unit(path)
        passed += unit_passed
        failed += unit_failed
    integration_passed, integration_failed = run_pytest(ringway, mock, ringctl, extra)
    passed += integration_passed
    failed += integration_failed
    sys.stdout.flush()
    summary = f"{passed} passed, {failed} failed"
    print(summary)
    os.makedirs(os.path.join(ROOT, ".zig-cache"), exist_ok=True)
    with open(os.path.join(ROOT, ".zig-cache", "ringway-test-summary"), "w") as handle:
        handle.write(summary + "\n")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
