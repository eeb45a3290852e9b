"""HTTP/1.1 framing on raw sockets: request-smuggling shapes are refused with
400 and a closed connection, size limits give 431/413, pipelining and
keep-alive keep order, Expect: 100-continue is honoured, and a slow head is
cut off with 408.

Framing is judged by the HTTP layer before the API key is: the refusals are
the same with and without a valid key, so those tests run both ways."""

import json
import threading
import time

import pytest

from helpers import RawConnection, chat_json, curl, curl_key, raw_request

SMALL_CHAT = chat_json(mock="chunks=2")


def assert_refused_and_closed(relay, request_bytes, status=400):
    with RawConnection(relay.port, timeout_s=5) as connection:
        connection.send(request_bytes)
        response = connection.read_response(timeout_s=5)
        assert response.status == status, response.head_bytes + response.body
        assert response.header("x-request-id"), "no x-request-id on the refusal"
        assert connection.wait_closed(timeout_s=3), "connection left open after a framing error"


SMUGGLING = {
    "content-length-and-transfer-encoding":
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(SMALL_CHAT)).encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n" +
        hex(len(SMALL_CHAT))[2:].encode() + b"\r\n" + SMALL_CHAT + b"\r\n0\r\n\r\n",
    "transfer-encoding-and-content-length":
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\nContent-Type: application/json\r\n\r\n0\r\n\r\n",
    "duplicate-content-length-different":
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(SMALL_CHAT)).encode() + b"\r\nContent-Length: 3\r\n\r\n" + SMALL_CHAT,
    "duplicate-content-length-same":
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(SMALL_CHAT)).encode() + b"\r\n"
        b"Content-Length: " + str(len(SMALL_CHAT)).encode() + b"\r\n\r\n" + SMALL_CHAT,
    "bare-lf-everywhere": b"GET /healthz HTTP/1.1\nHost: x\n\n",
    "bare-lf-in-one-header": b"GET /healthz HTTP/1.1\r\nHost: x\nX-Test: y\r\n\r\n",
    "obs-fold": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Folded: first\r\n  second\r\n\r\n",
    "obs-fold-tab": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Folded: first\r\n\tsecond\r\n\r\n",
    "space-before-colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Test : y\r\n\r\n",
    "space-before-colon-content-length":
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length : " + str(len(SMALL_CHAT)).encode() + b"\r\n\r\n" + SMALL_CHAT,
}


def with_key(request_bytes, api_key):
    """request_bytes with an Authorization header line before Host, using the request line's line ending."""
    request_line_end = request_bytes.index(b"\n")
    ending = b"\r\n" if request_bytes[request_line_end - 1:request_line_end] == b"\r" else b"\n"
    index = request_bytes.index(b"Host: ")
    return request_bytes[:index] + b"Authorization: Bearer " + api_key.encode() + ending + request_bytes[index:]


@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "key"])
@pytest.mark.parametrize("name", list(SMUGGLING))
def test_framing_attack_refused_with_400_and_close(relay, name, keyed):
    request = with_key(SMUGGLING[name], relay.api_key) if keyed else SMUGGLING[name]
    assert_refused_and_closed(relay, request)


def test_relay_still_serves_after_framing_attacks(relay):
    with RawConnection(relay.port) as connection:
        connection.send(raw_request("GET", "/healthz"))
        response = connection.read_response()
        assert response.status == 200 and response.body.strip() == b"ok"


@pytest.mark.parametrize("start", [b"GET /healthz", b"POST /v1/chat/completions"], ids=["healthz", "chat-no-key"])
def test_head_over_16_kib_is_431(relay, start):
    request = (start + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (17 * 1024) + b"\r\n\r\n")
    with RawConnection(relay.port, timeout_s=5) as connection:
        connection.send(request)
        response = connection.read_response(timeout_s=5)
        assert response.status == 431
        assert response.header("x-request-id")


def test_many_headers_over_16_kib_is_431(relay):
    lines = b"".join(b"X-Header-%04d: %s\r\n" % (index, b"v" * 60) for index in range(300))
    with RawConnection(relay.port, timeout_s=5) as connection:
        connection.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
        assert connection.read_response(timeout_s=5).status == 431


def test_head_just_under_limit_is_served(relay):
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (12 * 1024) + b"\r\n\r\n"
    with RawConnection(relay.port, timeout_s=5) as connection:
        connection.send(request)
        assert connection.read_response(timeout_s=5).status == 200


@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "key"])
def test_content_length_over_limit_is_413_before_the_body(relay, keyed):
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(11 * 1024 * 1024).encode() + b"\r\n\r\n")
    head = with_key(head, relay.api_key) if keyed else head
    with RawConnection(relay.port, timeout_s=5) as connection:
        connection.send(head)  # no body at all: the answer must come from the head alone
        response = connection.read_response(timeout_s=5)
        assert response.status == 413
        assert response.header("x-request-id")
        document = json.loads(response.body)
        assert isinstance(document["error"]["message"], str)


@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "key"])
def test_content_length_over_limit_with_expect_gets_413_not_100(relay, keyed):
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: " + str(11 * 1024 * 1024).encode() + b"\r\n\r\n")
    head = with_key(head, relay.api_key) if keyed else head
    with RawConnection(relay.port, timeout_s=5) as connection:
        connection.send(head)
        response = connection.read_head(timeout_s=5)
        assert response.status == 413


def _send_chunked_until_refused(port, total_bytes, piece_bytes, api_key=None):
    """Sends a chunked body of total_bytes (in piece_bytes chunks) while a thread reads the answer;
    with api_key, the head carries it.

    Returns (raw bytes the relay sent, whether sending stopped early)."""
    connection = RawConnection(port, timeout_s=10)
    received = []
    done = threading.Event()

    def reader():
        try:
            while True:
                data = connection.sock.recv(65536)
                if not data:
                    break
                received.append(data)
        except OSError:
            pass
        finally:
            done.set()

    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    connection.send(with_key(head, api_key) if api_key else head)
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    stopped_early = False
    sent = 0
    piece = b"%x\r\n" % piece_bytes + b" " * piece_bytes + b"\r\n"
    try:
        while sent < total_bytes:
            if received:
                stopped_early = True
                break
            connection.sock.sendall(piece)
            sent += piece_bytes
        else:
            connection.sock.sendall(b"0\r\n\r\n")
    except OSError:
        stopped_early = True
    done.wait(timeout=10)
    connection.close()
    thread.join(timeout=1)
    return b"".join(received), stopped_early


@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "key"])
def test_chunked_body_growing_past_limit_is_413(relay, keyed):
    data, _ = _send_chunked_until_refused(relay.port, total_bytes=12 * 1024 * 1024, piece_bytes=256 * 1024,
                                          api_key=relay.api_key if keyed else None)
    assert data.startswith(b"HTTP/1.1 413"), data[:200]


def test_pipelined_requests_answered_in_order(relay):
    slow_chat = chat_json(mock="first_byte_ms=300;chunks=3")
    with RawConnection(relay.port, timeout_s=10) as connection:
        connection.send(raw_request("POST", "/v1/chat/completions", slow_chat, headers=relay.auth) +
                        raw_request("GET", "/healthz") +
                        raw_request("GET", "/v1/models"))
        first = connection.read_response()
        second = connection.read_response()
        third = connection.read_response()
    assert first.status == 200
    assert json.loads(first.body)["choices"][0]["message"]["content"].split() == ["tok0", "tok1", "tok2"]
    assert second.status == 200 and second.body.strip() == b"ok"
    assert third.status == 200 and json.loads(third.body)["object"] == "list"
    ids = [response.header("x-request-id") for response in (first, second, third)]
    assert all(ids) and len(set(ids)) == 3


def test_pipelined_in_one_byte_writes(relay):
    data = raw_request("GET", "/healthz") + raw_request("POST", "/v1/chat/completions", SMALL_CHAT, headers=relay.auth)
    with RawConnection(relay.port, timeout_s=10) as connection:
        for index in range(len(data)):
            connection.send(data[index:index + 1])
        first = connection.read_response()
        second = connection.read_response()
    assert first.status == 200 and first.body.strip() == b"ok"
    assert second.status == 200
    assert json.loads(second.body)["choices"][0]["message"]["content"].split() == ["tok0", "tok1"]


def test_keep_alive_reuse(relay):
    with RawConnection(relay.port, timeout_s=10) as connection:
        for request in (raw_request("GET", "/healthz"),
                        raw_request("POST", "/v1/chat/completions", SMALL_CHAT, headers=relay.auth),
                        raw_request("POST", "/v1/chat/completions", chat_json(stream=True, mock="chunks=2"),
                                    headers=relay.auth),
                        raw_request("GET", "/v1/models"),
                        raw_request("GET", "/healthz")):
            connection.send(request)
            response = connection.read_response()
            assert response.status == 200, response.head_bytes
            assert (response.header("connection") or "").lower() != "close"
        assert not connection.wait_closed(timeout_s=0.3), "relay closed a keep-alive connection"


def test_refused_key_keeps_the_connection(relay):
    """A 401 is an answer like any other: the body was read, so the connection stays usable."""
    with RawConnection(relay.port, timeout_s=10) as connection:
        for headers, status in (({}, 401), ({"Authorization": "Bearer sk-wrong"}, 401), (relay.auth, 200)):
            connection.send(raw_request("POST", "/v1/chat/completions", SMALL_CHAT, headers=headers))
            response = connection.read_response()
            assert response.status == status, response.head_bytes + response.body
            assert (response.header("connection") or "").lower() != "close"
        assert json.loads(response.body)["choices"][0]["message"]["content"].split() == ["tok0", "tok1"]


def test_connection_close_is_honoured(relay):
    with RawConnection(relay.port, timeout_s=5) as connection:
        connection.send(raw_request("GET", "/healthz", headers={"Connection": "close"}))
        assert connection.read_response().status == 200
        assert connection.wait_closed(timeout_s=3)


def test_expect_100_continue_raw(relay):
    body = chat_json(mock="chunks=2", content="p" * 2000)
    head = with_key(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n",
                    relay.api_key)
    with RawConnection(relay.port, timeout_s=5) as connection:
        connection.send(head)
        interim = connection.read_head(timeout_s=5)
        assert interim.status == 100, interim.head_bytes
        assert interim.head_bytes.startswith(b"HTTP/1.1 100 Continue\r\n")
        connection.send(body)
        final = connection.read_response(timeout_s=10, skip_interim=False)
    assert final.status == 200
    assert json.loads(final.body)["choices"][0]["message"]["content"].split() == ["tok0", "tok1"]


def test_expect_100_continue_curl(relay, tmp_path):
    body = chat_json(mock="chunks=2", content="q" * 2000)
    path = tmp_path / "body.json"
    path.write_bytes(body)
    result = curl(relay.url + "/v1/chat/completions", "-H", "Content-Type: application/json", *curl_key(relay.api_key),
                  "-H", "Expect: 100-continue", "--expect100-timeout", "5", "--data-binary", f"@{path}")
    assert result.returncode == 0, result.stderr
    assert result.status_lines and result.status_lines[0].startswith("HTTP/1.1 100"), result.status_lines
    assert result.status == 200
    assert json.loads(result.body)["choices"][0]["message"]["content"].split() == ["tok0", "tok1"]


@pytest.fixture(scope="module")
def quick_timeout_relay(relay_factory):
    return relay_factory("relay-header-timeout", {"timeouts": {"header_ms": 500}})


def test_header_timeout_408(quick_timeout_relay):
    with RawConnection(quick_timeout_relay.port, timeout_s=5) as connection:
        connection.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Ty")
        started = time.monotonic()
        response = connection.read_response(timeout_s=5)
        elapsed = time.monotonic() - started
        assert response.status == 408
        assert response.header("x-request-id")
        assert elapsed >= 0.3, "408 before the header timeout could have passed"
        assert connection.wait_closed(timeout_s=3)


def test_header_timeout_not_reset_by_trickling_bytes(quick_timeout_relay):
    """One byte every 100 ms: the deadline covers the whole head, so 408 comes within ~0.5 s anyway."""
    partial = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 200
    with RawConnection(quick_timeout_relay.port, timeout_s=5) as connection:
        started = time.monotonic()
        got_answer = False
        try:
            for index in range(len(partial)):
                connection.send(partial[index:index + 1])
                if connection.readable(timeout_s=0.1):
                    got_answer = True
                    break
                if time.monotonic() - started > 4:
                    break
        except OSError:
            got_answer = True
        assert got_answer, "the relay kept waiting for a head trickled over 4 s"
        response = connection.read_response(timeout_s=3)
        assert response.status == 408
        assert time.monotonic() - started < 3


def test_header_timeout_relay_serves_normal_requests(quick_timeout_relay):
    with RawConnection(quick_timeout_relay.port, timeout_s=5) as connection:
        connection.send(raw_request("GET", "/healthz"))
        assert connection.read_response().status == 200


def test_body_split_across_writes(relay):
    body = chat_json(mock="chunks=3")
    request = raw_request("POST", "/v1/chat/completions", body, headers=relay.auth)
    with RawConnection(relay.port, timeout_s=10) as connection:
        for start in range(0, len(request), 7):
            connection.send(request[start:start + 7])
            time.sleep(0.001)
        response = connection.read_response()
    assert response.status == 200
    assert json.loads(response.body)["choices"][0]["message"]["content"].split() == ["tok0", "tok1", "tok2"]


def test_chunked_request_body_accepted(relay):
    body = chat_json(mock="chunks=2")
    chunked = b"".join(b"%x\r\n" % len(body[i:i + 10]) + body[i:i + 10] + b"\r\n" for i in range(0, len(body), 10))
    with RawConnection(relay.port, timeout_s=10) as connection:
        connection.send(with_key(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n", relay.api_key) + chunked + b"0\r\n\r\n")
        response = connection.read_response()
    assert response.status == 200
    assert json.loads(response.body)["choices"][0]["message"]["content"].split() == ["tok0", "tok1"]
