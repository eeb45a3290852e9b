"""Plain helpers shared by the integration tests: a raw HTTP/1.1 client on a
socket (for framing and back-pressure tests the SDK cannot express), an SSE
splitter that follows the WHATWG rules (LF, CRLF and CR line endings), a curl
wrapper, and small /proc readers. No fixtures here; those are in conftest.py.

Every network call is bounded by a timeout; nothing here waits forever."""

import http.client
import json
import os
import re
import select
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

UPSTREAM_API_KEY = "test-upstream-key"
DEFAULT_CHUNKS = 8
MIB = 1024 * 1024
# What the relay splices into a chat body that names neither max_tokens nor max_completion_tokens,
# for a model without max_output_tokens in the config, when the wallet can pay for that many.
SPLICED_MAX_TOKENS_DEFAULT = 4096


def bearer(api_key):
    """The Authorization header dict for an API key of the relay."""
    return {"Authorization": f"Bearer {api_key}"}


def curl_key(api_key):
    """curl arguments that send the API key."""
    return ["-H", f"Authorization: Bearer {api_key}"]


def names_output_limit(body):
    """True if the JSON body names max_tokens or max_completion_tokens as a number; then the relay
    sends it on as it is and splices nothing."""
    document = json.loads(body)
    return any(isinstance(document.get(name), int) and not isinstance(document.get(name), bool)
               for name in ("max_tokens", "max_completion_tokens"))


def splice_max_tokens(body, max_tokens=SPLICED_MAX_TOKENS_DEFAULT):
    """The relay's max_tokens splice: `"max_tokens":N,` right after the body's opening brace
    (before any whitespace that follows it); every other byte as it was."""
    index = body.index(b"{") + 1
    assert body[:index - 1].strip() == b"", "body does not start with an object"
    return body[:index] + b'"max_tokens":%d,' % max_tokens + body[index:]


def expected_tokens(count):
    """The content deltas the mock streams for chunks=count: "tok0 ", "tok1 ", ..."""
    return [f"tok{index} " for index in range(count)]


def chat_body(model="ringway-demo", stream=False, mock=None, content="Say hi", **extra):
    """A chat-completions request body as a dict; `mock` becomes the body directive member."""
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
    if mock is not None:
        body["mock"] = mock
    body.update(extra)
    return body


def chat_json(**kwargs):
    """The same as chat_body, serialized compactly to bytes."""
    return json.dumps(chat_body(**kwargs), separators=(",", ":")).encode()


# ---------------------------------------------------------------------------
# Raw HTTP/1.1 over a socket.


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list  # [(lower-case name, value)] in wire order
    body: bytes = b""
    head_bytes: bytes = b""

    def header(self, name, default=None):
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def header_all(self, name):
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    def json(self):
        return json.loads(self.body)


class PeerClosed(Exception):
    """The peer closed (or reset) the connection before the expected bytes arrived."""


class RawConnection:
    """One client TCP connection to 127.0.0.1:port with a byte buffer for responses.

    recv_buffer_bytes sets SO_RCVBUF before connecting (small values make the
    kernel push back on the sender quickly, for the slow-client tests). source_host binds the
    client end to another loopback address (any of 127.0.0.0/8), so one machine can be several
    clients to the relay's per-address limits."""

    def __init__(self, port, timeout_s=10.0, recv_buffer_bytes=None, ssl_context=None, source_host=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if recv_buffer_bytes is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer_bytes)
        if source_host is not None:
            self.sock.bind((source_host, 0))
        self.sock.settimeout(timeout_s)
        self.sock.connect(("127.0.0.1", port))
        if ssl_context is not None:
            self.sock = ssl_context.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.timeout_s = timeout_s
        self.buffer = b""
        self.eof = False
        self.total_received_bytes = 0

    def close(self, reset=False):
        """Closes the socket; reset=True sends an RST (SO_LINGER 0) instead of a FIN."""
        if self.sock is None:
            return
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.sock.close()
        self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        """Reads more bytes into the buffer; raises PeerClosed at EOF/reset, socket.timeout past deadline."""
        if self.eof:
            raise PeerClosed("connection already closed by the peer")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline passed while waiting for bytes")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError) as error:
            self.eof = True
            raise PeerClosed(f"connection reset: {error}") from error
        if not data:
            self.eof = True
            raise PeerClosed("connection closed by the peer")
        self.buffer += data
        self.total_received_bytes += len(data)

    def read_until(self, marker, deadline):
        while marker not in self.buffer:
            self._fill(deadline)
        index = self.buffer.index(marker) + len(marker)
        data, self.buffer = self.buffer[:index], self.buffer[index:]
        return data

    def read_exact(self, count, deadline):
        while len(self.buffer) < count:
            self._fill(deadline)
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def read_head(self, timeout_s=None):
        """Reads one response head (status line + headers); returns a RawResponse without body."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        head = self.read_until(b"\r\n\r\n", deadline)
        lines = head[:-4].split(b"\r\n")
        match = re.match(rb"HTTP/1\.[01] (\d{3})(?: (.*))?$", lines[0])
        if not match:
            raise AssertionError(f"bad status line {lines[0]!r}")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1").lower(), value.strip().decode("latin-1")))
        return RawResponse(int(match.group(1)), (match.group(2) or b"").decode("latin-1"), headers,
                           head_bytes=head)

    def iter_body(self, response, timeout_s=None):
        """Yields the body of `response` piece by piece as it arrives (de-chunked)."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        if response.status in (204, 304) or 100 <= response.status < 200:
            return
        encoding = (response.header("transfer-encoding") or "").lower()
        if "chunked" in encoding:
            while True:
                size_line = self.read_until(b"\r\n", deadline)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.read_until(b"\r\n", deadline) != b"\r\n":
                        pass  # trailers
                    return
                while size > 0:
                    if not self.buffer:
                        self._fill(deadline)
                    piece = self.buffer[:size]
                    self.buffer = self.buffer[len(piece):]
                    size -= len(piece)
                    yield piece
                if self.read_exact(2, deadline) != b"\r\n":
                    raise AssertionError("chunk not followed by CRLF")
        elif response.header("content-length") is not None:
            remaining = int(response.header("content-length"))
            while remaining > 0:
                if not self.buffer:
                    self._fill(deadline)
                piece = self.buffer[:remaining]
                self.buffer = self.buffer[len(piece):]
                remaining -= len(piece)
                yield piece
        else:
            while True:
                if self.buffer:
                    piece, self.buffer = self.buffer, b""
                    yield piece
                try:
                    self._fill(deadline)
                except PeerClosed:
                    return

    def read_chunks(self, timeout_s=None):
        """Reads a chunked body and returns its chunks' payloads as sent (for checking write boundaries)."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        chunks = []
        while True:
            size = int(self.read_until(b"\r\n", deadline).split(b";")[0].strip(), 16)
            if size == 0:
                while self.read_until(b"\r\n", deadline) != b"\r\n":
                    pass
                return chunks
            chunks.append(self.read_exact(size, deadline))
            if self.read_exact(2, deadline) != b"\r\n":
                raise AssertionError("chunk not followed by CRLF")

    def read_response(self, timeout_s=None, skip_interim=True):
        """Reads one whole response. With skip_interim, 1xx responses are read and dropped."""
        while True:
            response = self.read_head(timeout_s)
            if skip_interim and 100 <= response.status < 200:
                continue
            response.body = b"".join(self.iter_body(response, timeout_s))
            return response

    def wait_closed(self, timeout_s=3.0):
        """True when the peer closes (FIN or RST) within timeout_s without sending more bytes.

        Bytes already buffered or arriving count as "not closed" (the peer said more)."""
        if self.buffer:
            return False
        deadline = time.monotonic() + timeout_s
        try:
            self._fill(deadline)
        except PeerClosed:
            return True
        except (socket.timeout, TimeoutError):
            return False
        return False

    def readable(self, timeout_s=0.0):
        """True if bytes (or EOF) are waiting on the socket now / within timeout_s."""
        if self.buffer:
            return True
        ready, _, _ = select.select([self.sock], [], [], timeout_s)
        return bool(ready)


def raw_request(method, path, body=None, headers=None, host="127.0.0.1"):
    """Builds the bytes of a well-formed request (Content-Length framing when there is a body)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        if not any(name.lower() == "content-type" for name in (headers or {})):
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


# ---------------------------------------------------------------------------
# Server-sent events.


@dataclass
class SseEvent:
    data: str
    comments: list = field(default_factory=list)


def split_lines(text):
    """Splits on CRLF, LF or CR (the SSE rule). Returns (lines, trailing_partial_line)."""
    parts = re.split(r"\r\n|\r|\n", text)
    return parts[:-1], parts[-1]


def parse_sse(raw):
    """Parses an event stream into (events, problems).

    events: every dispatched event that has at least one data line, in order.
    problems: human-readable strings for anything that is not well-formed SSE
    as an OpenAI client expects it (unknown fields, an unterminated last event,
    bytes that are not UTF-8). Comments between events are allowed."""
    problems = []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return [], [f"not UTF-8: {error}"]
    if text.endswith("\r"):
        text += "\n"  # a lone CR at the very end is a complete line ending
    lines, partial = split_lines(text)
    if partial:
        problems.append(f"stream ends inside a line: {partial[:80]!r}")
    events = []
    data_lines, comments = [], []
    for line in lines:
        if line == "":
            if data_lines:
                events.append(SseEvent("\n".join(data_lines), comments))
            elif comments:
                pass
            data_lines, comments = [], []
            continue
        if line.startswith(":"):
            comments.append(line[1:])
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data_lines.append(value)
        elif name in ("event", "id", "retry"):
            pass
        else:
            problems.append(f"unexpected SSE line {line[:80]!r}")
    if data_lines:
        problems.append("last event is not terminated by an empty line")
    return events, problems


def decode_chunk_events(events):
    """JSON-decodes every event except a final [DONE]; returns (objects, saw_done)."""
    objects, saw_done = [], False
    for index, event in enumerate(events):
        if event.data == "[DONE]":
            assert index == len(events) - 1, "data: [DONE] is not the last event"
            saw_done = True
            continue
        objects.append(json.loads(event.data))
    return objects, saw_done


def content_of_chunk_dicts(chunks):
    """The non-empty delta.content strings of decoded chunk dicts, in order."""
    contents = []
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                contents.append(content)
    return contents


# ---------------------------------------------------------------------------
# curl and plain HTTP clients.


@dataclass
class CurlResult:
    returncode: int
    status: int
    header_blocks: list  # one list of (name, value) per response head, interim ones included
    status_lines: list
    body: bytes
    stderr: str

    def header(self, name):
        name = name.lower()
        for key, value in self.header_blocks[-1] if self.header_blocks else []:
            if key == name:
                return value
        return None


def curl(url, *args, timeout_s=20):
    """Runs curl against url (no proxy, -sS); returns a CurlResult. args are extra curl arguments."""
    with tempfile.TemporaryDirectory(prefix="ringway-curl-") as scratch:
        head_path = os.path.join(scratch, "head")
        body_path = os.path.join(scratch, "body")
        command = ["curl", "-sS", "--noproxy", "*", "-m", str(timeout_s), "-D", head_path, "-o", body_path,
                   "-w", "%{http_code}", *args, url]
        completed = subprocess.run(command, capture_output=True, timeout=timeout_s + 10)
        head = open(head_path, "rb").read() if os.path.exists(head_path) else b""
        body = open(body_path, "rb").read() if os.path.exists(body_path) else b""
    blocks, status_lines = [], []
    for line in head.decode("latin-1").split("\r\n"):
        if line.startswith("HTTP/"):
            status_lines.append(line)
            blocks.append([])
        elif line and blocks:
            name, _, value = line.partition(":")
            blocks[-1].append((name.strip().lower(), value.strip()))
    status_text = completed.stdout.decode().strip()
    return CurlResult(completed.returncode, int(status_text) if status_text.isdigit() else 0, blocks,
                      status_lines, body, completed.stderr.decode(errors="replace"))


def http_request(url, method="GET", body=None, headers=None, ssl_context=None, timeout_s=10):
    """One request with http.client (de-chunks for us). Returns (status, headers as lower-case dict, body)."""
    match = re.match(r"(https?)://([^/:]+):(\d+)(/.*)?$", url)
    assert match, url
    scheme, host, port, path = match.group(1), match.group(2), int(match.group(3)), match.group(4) or "/"
    if scheme == "https":
        connection = http.client.HTTPSConnection(host, port, timeout=timeout_s, context=ssl_context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, {key.lower(): value for key, value in response.getheaders()}, data
    finally:
        connection.close()


def client_ssl_context(ca_file):
    context = ssl.create_default_context(cafile=ca_file)
    return context


# ---------------------------------------------------------------------------
# /proc readers for resource checks.


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def open_fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(predicate, timeout_s, interval_s=0.05):
    """Polls predicate until it returns a truthy value or timeout_s passes; returns the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval_s)


def usage_records(relay, user_id):
    """Every usage record of a user, through the admin API's JSONL export (newest first)."""
    status, payload = relay.admin("GET", f"/admin/usage?user_id={user_id}&format=jsonl&limit=1000000")
    assert status == 200, payload
    if isinstance(payload, dict):
        return [payload]
    return [json.loads(line) for line in payload.decode().splitlines() if line]
