"""Command line and configuration: --version, --help, refusing a bad config
with FILE:LINE, the ready line on stderr, and a clean exit on SIGTERM/SIGINT."""

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from helpers import http_request, wait_for


def run_briefly(argv, timeout_s=10):
    """Runs argv to completion; a process still running after timeout_s is killed and fails the test."""
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate(timeout=5)
        pytest.fail(f"{' '.join(argv)} was still running after {timeout_s} s\nstderr: {stderr.decode()}")
    return process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


def test_version(ringway_bin):
    code, stdout, stderr = run_briefly([ringway_bin, "--version"])
    assert code == 0
    assert "ringway 0.1.0" in stdout + stderr


def test_help(ringway_bin):
    code, stdout, stderr = run_briefly([ringway_bin, "--help"])
    assert code == 0
    assert "--config" in stdout + stderr


def test_unknown_option_fails(ringway_bin):
    code, _, stderr = run_briefly([ringway_bin, "--no-such-option"])
    assert code != 0
    assert stderr.strip()


def test_missing_config_file(ringway_bin, workdir):
    path = os.path.join(workdir, "does-not-exist.conf")
    code, _, stderr = run_briefly([ringway_bin, "--config", path])
    assert code != 0
    assert path in stderr


def _lines(text):
    return text.split("\n")


def _insert_after(text, anchor, new_line):
    lines = _lines(text)
    index = lines.index(anchor)
    lines.insert(index + 1, new_line)
    return "\n".join(lines), index + 2


def _insert_before(text, anchor, new_line):
    lines = _lines(text)
    index = lines.index(anchor)
    lines.insert(index, new_line)
    return "\n".join(lines), index + 1


def _replace(text, old_line, new_line, occurrence=0):
    lines = _lines(text)
    indexes = [index for index, line in enumerate(lines) if line == old_line]
    index = indexes[occurrence]
    lines[index] = new_line
    return "\n".join(lines), index + 1


def _threads_line(text):
    return next(line for line in _lines(text) if line.startswith("threads ="))


def _line_starting(text, prefix, after=None):
    lines = _lines(text)
    start = lines.index(after) if after else 0
    return next(line for line in lines[start:] if line.startswith(prefix))


# name -> function(text) -> (bad text, exact line number or None when only FILE:N: is required)
BAD_CONFIGS = {
    "line-without-equals": lambda text: _insert_after(text, "[server]", "threads 2"),
    "unknown-key": lambda text: _insert_after(text, "[server]", "colour = blue"),
    "threads-not-a-number": lambda text: _replace(text, _threads_line(text), "threads = lots"),
    "unknown-section": lambda text: _insert_before(text, "[limits]", "[nonsense]"),
    "unterminated-section-header": lambda text: _replace(text, "[limits]", "[limits"),
    "duplicate-key": lambda text: _insert_after(text, _threads_line(text), "threads = 3"),
    "port-out-of-range": lambda text: _replace(text, _line_starting(text, "listen ="), "listen = 127.0.0.1:99999"),
    "negative-timeout": lambda text: _replace(text, "header_ms = 10000", "header_ms = -5"),
    "bad-disconnect-policy": lambda text: _replace(text, "client_disconnect = drain", "client_disconnect = maybe"),
    "unknown-upstream": lambda text: (_replace(text, "upstream = mock", "upstream = nowhere")[0], None),
    "plain-http-not-loopback": lambda text: (
        _replace(text, _line_starting(text, "base_url =", after="[upstream plain]"),
                 "base_url = http://example.com/v1")[0], None),
}


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_bad_config_exits_nonzero_naming_file_and_line(ringway_bin, relay_config_factory, name):
    path, good_text, _ = relay_config_factory(f"bad-{name}")
    bad_text, line = BAD_CONFIGS[name](good_text)
    assert bad_text != good_text
    with open(path, "w") as config:
        config.write(bad_text)
    code, _, stderr = run_briefly([ringway_bin, "--config", path])
    assert code != 0, f"ringway accepted a bad config ({name})"
    if line is None:
        assert re.search(re.escape(path) + r":\d+: \S", stderr), stderr
    else:
        assert f"{path}:{line}: " in stderr, f"expected {path}:{line}: in stderr:\n{stderr}\n--- config ---\n{bad_text}"


def test_the_unmodified_config_is_valid(relay):
    """Control for the bad-config tests: the base they edit starts and serves."""
    status, _, body = http_request(relay.url + "/healthz")
    assert status == 200 and body.strip() == b"ok"


def test_ready_line_on_stderr(relay):
    expected = f"ringway: listening on 127.0.0.1:{relay.port} (2 threads)"
    assert wait_for(lambda: expected in relay.process.stderr_text(), timeout_s=2), relay.process.stderr_text()


def test_mock_ready_line_on_stderr(mock, mock_plain):
    for upstream in (mock, mock_plain):
        expected = f"ringway-mock: listening on 127.0.0.1:{upstream.port}"
        assert wait_for(lambda: expected in upstream.process.stderr_text(), timeout_s=2), \
            upstream.process.stderr_text()


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly(ringway_bin, relay_config_factory, spawn, signal_number):
    name = f"relay-signal-{int(signal_number)}"
    path, _, port = relay_config_factory(name)
    process = spawn(name, [ringway_bin, "--config", path])
    try:
        process.wait_ready(f"http://127.0.0.1:{port}/healthz")
        # An open idle keep-alive connection must not hold up the exit.
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            started = time.monotonic()
            process.signal(signal_number)
            code = process.wait(timeout_s=10)
            assert code is not None, "ringway did not exit within 10 s of the signal"
            assert code == 0, f"exit code {code}"
            assert time.monotonic() - started < 10
        finally:
            idle.close()
    finally:
        process.stop()
