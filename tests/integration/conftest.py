"""Fixtures for the integration tests: real binaries on loopback ports.

Session-wide: a scratch directory, a throwaway CA plus a server certificate
for 127.0.0.1/localhost made with the openssl CLI, the mock upstream with TLS
(`mock`) and without (`mock_plain`), the default relay (`relay`) and an
OpenAI SDK client for it (`client`). `relay_factory` starts further relays
with a changed configuration; they stop at the end of the session.

Every process writes stdout/stderr to files in the scratch directory; when a
test fails, the log tails of the processes that started, logged or exited
during it are attached to the report. Processes are
stopped by PID (SIGTERM, then SIGKILL after a bounded wait)."""

import atexit
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import UPSTREAM_API_KEY, http_request  # noqa: E402

READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
LOG_TAIL_BYTES = 4000

_PROCESSES = []
_STATES_KEY = pytest.StashKey()
_USED_PORTS = set()


# ---------------------------------------------------------------------------
# Binaries.


def _binary_from_environment(variable):
    path = os.environ.get(variable)
    if not path:
        pytest.fail(f"{variable} is not set; run through `tools/zig build test` or set it to the built binary",
                    pytrace=False)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{variable}={path} is not an executable file", pytrace=False)
    return path


@pytest.fixture(scope="session")
def ringway_bin():
    return _binary_from_environment("RINGWAY_BIN")


@pytest.fixture(scope="session")
def mock_bin():
    return _binary_from_environment("RINGWAY_MOCK_BIN")


# ---------------------------------------------------------------------------
# Ports and processes.


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on now and this session has not handed out before."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in _USED_PORTS:
            _USED_PORTS.add(port)
            return port
    raise RuntimeError("no free port found")


def _tail(path):
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - LOG_TAIL_BYTES))
            data = log.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return ("...\n" if size > LOG_TAIL_BYTES else "") + text


class ManagedProcess:
    """A child process whose stdout/stderr go to files in log_dir; stopped by PID."""

    def __init__(self, name, argv, log_dir, env=None):
        self.name = name
        self.argv = [str(argument) for argument in argv]
        self.stdout_path = os.path.join(log_dir, f"{name}.stdout")
        self.stderr_path = os.path.join(log_dir, f"{name}.stderr")
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                          env=env)
        self.pid = self.popen.pid
        _PROCESSES.append(self)

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as log:
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def describe(self):
        state = "running" if self.popen.poll() is None else f"exited with {self.popen.returncode}"
        return (f"{self.name} (pid {self.pid}, {state}): {' '.join(self.argv)}\n"
                f"--- stderr ---\n{_tail(self.stderr_path)}\n--- stdout ---\n{_tail(self.stdout_path)}")

    def wait_ready(self, url, ssl_context=None, timeout_s=READY_TIMEOUT_S):
        """Waits until GET url answers with any HTTP response; fails the test with the logs otherwise."""
        deadline = time.monotonic() + timeout_s
        last_error = None
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                pytest.fail(f"{self.name} exited before it was ready\n{self.describe()}", pytrace=False)
            try:
                http_request(url, ssl_context=ssl_context, timeout_s=1.0)
                return
            except Exception as error:  # any failure (refused, TLS not up, reset) means "not yet"
                last_error = error
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"{self.name} did not answer {url} within {timeout_s:.0f} s (last error: {last_error!r})\n"
                    f"{self.describe()}", pytrace=False)

    def signal(self, signal_number):
        if self.popen.poll() is None:
            os.kill(self.pid, signal_number)

    def wait(self, timeout_s=STOP_TIMEOUT_S):
        """Waits for exit; returns the exit code or None if still running after timeout_s."""
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        """SIGTERM, bounded wait, then SIGKILL. Returns the exit code (negative for a signal)."""
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            if self.wait(STOP_TIMEOUT_S) is None:
                self.popen.kill()
                self.popen.wait(timeout=STOP_TIMEOUT_S)
        return self.popen.returncode


@atexit.register
def _kill_leftovers():
    for process in _PROCESSES:
        if process.popen.poll() is None:
            process.popen.kill()


def _process_states():
    """pid -> (bytes logged so far, running?) for every process of the session."""
    states = {}
    for process in _PROCESSES:
        try:
            size = os.path.getsize(process.stderr_path) + os.path.getsize(process.stdout_path)
        except OSError:
            size = 0
        states[process.pid] = (size, process.popen.poll() is None)
    return states


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    item.stash[_STATES_KEY] = _process_states()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach the logs of the processes that started, logged something or exited
    during this test (the others would only repeat what earlier reports showed)."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    before = item.stash.get(_STATES_KEY, {})
    now = _process_states()
    for process in _PROCESSES:
        if before.get(process.pid) != now.get(process.pid):
            report.sections.append((f"process {process.name}", process.describe()))


# ---------------------------------------------------------------------------
# Scratch directory and certificates.


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("ringway-it"))


@dataclass
class Certificates:
    ca_cert: str
    ca_key: str
    server_cert: str
    server_key: str

    def client_context(self):
        return ssl.create_default_context(cafile=self.ca_cert)


def _openssl(*args, cwd):
    completed = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if completed.returncode != 0:
        pytest.fail(f"openssl {' '.join(args)} failed:\n{completed.stderr}", pytrace=False)


def make_certificates(directory):
    """A throwaway CA and a server certificate for IP 127.0.0.1 and DNS localhost, signed by it."""
    os.makedirs(directory, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
             "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=Ringway Test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=localhost", cwd=directory)
    with open(os.path.join(directory, "server.ext"), "w") as extensions:
        extensions.write("basicConstraints=CA:FALSE\n"
                         "keyUsage=critical,digitalSignature,keyEncipherment\n"
                         "extendedKeyUsage=serverAuth\n"
                         "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-sha256", "-days", "2", "-extfile", "server.ext", "-out", "server.pem", cwd=directory)
    for key in ("ca.key", "server.key"):
        os.chmod(os.path.join(directory, key), 0o600)
    return Certificates(ca_cert=os.path.join(directory, "ca.pem"), ca_key=os.path.join(directory, "ca.key"),
                        server_cert=os.path.join(directory, "server.pem"),
                        server_key=os.path.join(directory, "server.key"))


@pytest.fixture(scope="session")
def spawn(workdir):
    """Returns start(name, argv) -> ManagedProcess (logs in workdir); the caller stops it."""

    def start(name, argv):
        return ManagedProcess(name, argv, workdir)

    return start


@pytest.fixture(scope="session")
def certs(workdir):
    return make_certificates(os.path.join(workdir, "certs"))


# ---------------------------------------------------------------------------
# The mock upstream.


@dataclass
class Upstream:
    url: str  # scheme://127.0.0.1:port, no path
    port: int
    process: ManagedProcess
    ssl_context: object = None

    @property
    def base_url(self):
        return self.url + "/v1"


def start_mock(mock_bin, workdir, name, certs=None, api_key=UPSTREAM_API_KEY, threads=2):
    port = free_port()
    argv = [mock_bin, "--listen", f"127.0.0.1:{port}", "--threads", str(threads)]
    if certs is not None:
        argv += ["--tls-cert", certs.server_cert, "--tls-key", certs.server_key]
    if api_key is not None:
        argv += ["--api-key", api_key]
    process = ManagedProcess(name, argv, workdir)
    scheme = "https" if certs is not None else "http"
    context = certs.client_context() if certs is not None else None
    process.wait_ready(f"{scheme}://127.0.0.1:{port}/healthz", ssl_context=context)
    return Upstream(url=f"{scheme}://127.0.0.1:{port}", port=port, process=process, ssl_context=context)


@pytest.fixture(scope="session")
def mock(mock_bin, workdir, certs):
    """ringway-mock with TLS (certificate from `certs`), requiring the upstream API key."""
    upstream = start_mock(mock_bin, workdir, "mock-tls", certs=certs)
    yield upstream
    upstream.process.stop()


@pytest.fixture(scope="session")
def mock_plain(mock_bin, workdir):
    """ringway-mock over plain HTTP, requiring the upstream API key."""
    upstream = start_mock(mock_bin, workdir, "mock-plain")
    yield upstream
    upstream.process.stop()


# ---------------------------------------------------------------------------
# The relay.


ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
# What the fixtures' customer can spend: far more than any test uses, so that only
# the billing tests (which make their own users) ever meet a 402.
CUSTOMER_BALANCE = "1000000.00"


@dataclass
class Relay:
    name: str
    url: str  # http://127.0.0.1:port
    port: int
    process: ManagedProcess
    config_path: str
    config_text: str
    admin_url: str = ""  # http://127.0.0.1:admin_port
    admin_token: str = ADMIN_TOKEN
    api_key: str = ""  # a key of a customer with CUSTOMER_BALANCE, made through the admin API at start
    user_id: int = 0

    @property
    def pid(self):
        return self.process.pid

    @property
    def auth(self):
        """The Authorization header for the fixture customer's key."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def admin(self, method, path, body=None):
        """Calls the admin API; returns (status, parsed JSON or raw bytes)."""
        import json

        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        status, _, payload = _http(self.admin_url + path, method, data, headers)
        try:
            return status, json.loads(payload)
        except ValueError:
            return status, payload

    def client(self, prefix="/v1", **kwargs):
        import openai

        options = dict(base_url=self.url + prefix, api_key=self.api_key, max_retries=0, timeout=30.0)
        options.update(kwargs)
        return openai.OpenAI(**options)


def _http(url, method, body, headers, timeout_s=30):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def make_customer(relay, email, balance=CUSTOMER_BALANCE, **key_fields):
    """Creates a user with `balance` and a key through the admin API; returns (user id, key)."""
    status, user = relay.admin("POST", "/admin/users", {"email": email, "balance": balance})
    assert status == 201, user
    status, key = relay.admin("POST", "/admin/keys", dict(user_id=user["id"], **key_fields))
    assert status == 201, key
    return user["id"], key["key"]


def render_config(sections):
    """sections: [(header, {key: value})] -> config text. Values None are left out; a list value
    is one line per item (route = ... repeats)."""
    lines = []
    for header, values in sections:
        lines.append(f"[{header}]")
        for key, value in values.items():
            for item in value if isinstance(value, list) else [value]:
                if item is not None:
                    lines.append(f"{key} = {item}")
        lines.append("")
    return "\n".join(lines)


def default_config_sections(port, data_dir, mock, mock_plain, certs, dead_port):
    """The configuration the default relay runs with, as editable sections.

    Upstreams: `mock` (TLS, right key), `plain` (loopback http), `dead`
    (a port nobody listens on), `wrongkey` (TLS, a key the mock refuses).
    Models: ringway-demo, plain-demo, dead-demo, wrongkey-demo, and
    suffix-demo whose upstream_model carries mock directives. Breakers off (see [routing]). Tiers bronze,
    silver and gold with limits no test reaches, none of them the default."""
    return [
        ("server", {"listen": f"127.0.0.1:{port}", "threads": 2, "data_dir": data_dir,
                    "admin_listen": f"127.0.0.1:{free_port()}"}),
        ("auth", {"admin_token": ADMIN_TOKEN}),
        ("limits", {"header_bytes_max": 16384, "body_bytes_max": 10485760}),
        ("timeouts", {"header_ms": 10000}),
        ("relay", {"client_disconnect": "drain"}),
        # The error-mapping tests inject upstream failures into shared upstreams: breakers that
        # never open and refused keys that are tried again at once keep each test's answer its
        # own. test_routing.py runs its own relay with real breakers.
        ("routing", {"breaker_failures": 1000000, "breaker_error_percent": 0, "key_refused_retry_ms": 1}),
        ("upstream mock", {"base_url": mock.base_url, "api_key": UPSTREAM_API_KEY, "ca_file": certs.ca_cert}),
        ("upstream plain", {"base_url": mock_plain.base_url, "api_key": UPSTREAM_API_KEY}),
        ("upstream dead", {"base_url": f"http://127.0.0.1:{dead_port}/v1", "api_key": UPSTREAM_API_KEY}),
        ("upstream wrongkey", {"base_url": mock.base_url, "api_key": "not-the-key", "ca_file": certs.ca_cert}),
        ("model ringway-demo", {"upstream": "mock", "upstream_model": "mock-small"}),
        ("model plain-demo", {"upstream": "plain", "upstream_model": "mock-small"}),
        ("model dead-demo", {"upstream": "dead", "upstream_model": "mock-small"}),
        ("model wrongkey-demo", {"upstream": "wrongkey", "upstream_model": "mock-small"}),
        ("model suffix-demo", {"upstream": "mock", "upstream_model": "mock-small:chunks=3"}),
        # Tiers keys may name; none is the default, so nothing is limited unless a test says so.
        ("tier bronze", {"requests_per_minute": 100000}),
        ("tier silver", {"requests_per_minute": 200000}),
        ("tier gold", {"requests_per_minute": 300000, "concurrent_requests": 10000}),
    ]


def apply_overrides(sections, overrides):
    """overrides: {header: {key: value}} merged into matching sections (None deletes a key);
    headers that do not exist yet are appended as new sections."""
    result = [(header, dict(values)) for header, values in sections]
    for header, values in (overrides or {}).items():
        for existing_header, existing_values in result:
            if existing_header == header:
                for key, value in values.items():
                    if value is None:
                        existing_values.pop(key, None)
                    else:
                        existing_values[key] = value
                break
        else:
            result.append((header, dict(values)))
    return result


@pytest.fixture(scope="session")
def dead_port():
    """A loopback port with nothing listening (handed out once, never bound)."""
    return free_port()


@pytest.fixture(scope="session")
def relay_config_factory(workdir, mock, mock_plain, certs, dead_port):
    """Returns make(name, overrides=None, port=None) -> (config_path, text, port); writes the file only."""

    def make(name, overrides=None, port=None):
        port = port or free_port()
        data_dir = os.path.join(workdir, f"{name}-data")
        os.makedirs(data_dir, exist_ok=True)
        sections = apply_overrides(default_config_sections(port, data_dir, mock, mock_plain, certs, dead_port),
                                   overrides)
        text = render_config(sections)
        path = os.path.join(workdir, f"{name}.conf")
        with open(path, "w") as config:
            config.write(text)
        return path, text, port

    return make


@pytest.fixture(scope="session")
def relay_factory(ringway_bin, workdir, relay_config_factory):
    """Returns start(name, overrides=None) -> Relay, ready (answers /healthz). Stopped at session end.

    overrides follows apply_overrides, e.g. {"timeouts": {"header_ms": 500}}."""
    started = []
    names = set()

    def start(name, overrides=None):
        assert name not in names, f"relay name {name} used twice"
        names.add(name)
        path, text, port = relay_config_factory(name, overrides)
        process = ManagedProcess(name, [ringway_bin, "--config", path], workdir)
        admin_line = next(line for line in text.splitlines() if line.startswith("admin_listen"))
        relay = Relay(name=name, url=f"http://127.0.0.1:{port}", port=port, process=process, config_path=path,
                      config_text=text, admin_url="http://" + admin_line.split("=", 1)[1].strip())
        started.append(relay)
        process.wait_ready(relay.url + "/healthz")
        relay.user_id, relay.api_key = make_customer(relay, f"customer@{name}.test")
        return relay

    yield start
    for relay in started:
        relay.process.stop()


@pytest.fixture(scope="session")
def relay(relay_factory):
    """The default relay (see default_config_sections)."""
    return relay_factory("relay")


@pytest.fixture(scope="session")
def client(relay):
    """openai.OpenAI for the default relay at /v1, no retries, 30 s timeout."""
    sdk = relay.client()
    yield sdk
    sdk.close()
