"""The mock upstream on its own: what the relay tests lean on (endpoints,
directives, usage arithmetic, API key), checked without the relay so a
failure points at the right binary."""

import json
import time

import pytest

from helpers import (DEFAULT_CHUNKS, UPSTREAM_API_KEY, PeerClosed, RawConnection, chat_json,
                     content_of_chunk_dicts, decode_chunk_events, expected_tokens, http_request, parse_sse,
                     raw_request)

AUTH = {"Authorization": f"Bearer {UPSTREAM_API_KEY}", "Content-Type": "application/json"}


def call(upstream, path, body=None, headers=None, method=None):
    merged = dict(AUTH)
    merged.update(headers or {})
    return http_request(upstream.base_url + path, method or ("POST" if body is not None else "GET"), body=body,
                        headers=merged, ssl_context=upstream.ssl_context)


def chat(upstream, body, headers=None):
    status, response_headers, data = call(upstream, "/chat/completions", body, headers)
    return status, response_headers, data


def stream_events(upstream, body, headers=None):
    status, response_headers, data = chat(upstream, body, headers)
    assert status == 200, data
    assert response_headers.get("content-type", "").startswith("text/event-stream")
    assert response_headers.get("transfer-encoding", "").lower() == "chunked"
    events, problems = parse_sse(data)
    assert problems == []
    objects, saw_done = decode_chunk_events(events)
    assert saw_done
    return objects, data


@pytest.fixture(params=["mock", "mock_plain"])
def upstream(request):
    return request.getfixturevalue(request.param)


def test_healthz(upstream):
    status, _, body = http_request(upstream.url + "/healthz", ssl_context=upstream.ssl_context)
    assert status == 200 and body.strip() == b"ok"


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", f"Basic {UPSTREAM_API_KEY}"])
def test_api_key_required(upstream, authorization):
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    status, _, data = http_request(upstream.base_url + "/chat/completions", "POST", body=chat_json(),
                                   headers=headers, ssl_context=upstream.ssl_context)
    assert status == 401
    error = json.loads(data)["error"]
    assert {"message", "type", "param", "code"} <= set(error)


def test_models(upstream):
    status, _, data = call(upstream, "/models")
    assert status == 200
    document = json.loads(data)
    assert document["object"] == "list"
    assert document["data"] and all(entry["object"] == "model" for entry in document["data"])


def test_embeddings(upstream):
    status, _, data = call(upstream, "/embeddings", json.dumps({"model": "mock-small", "input": "hi"}).encode())
    assert status == 200, data
    document = json.loads(data)
    assert document["object"] == "list"
    assert isinstance(document["data"][0]["embedding"], list)


def test_non_stream_default(upstream):
    body = chat_json(model="mock-small")
    status, _, data = chat(upstream, body)
    assert status == 200, data
    completion = json.loads(data)
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"].split() == \
        [token.strip() for token in expected_tokens(DEFAULT_CHUNKS)]
    usage = completion["usage"]
    assert usage["prompt_tokens"] == len(body) // 4 + 1
    assert usage["completion_tokens"] == DEFAULT_CHUNKS
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("where", ["header", "body", "model"])
def test_directive_sources(upstream, where):
    if where == "header":
        body, headers = chat_json(model="mock-small"), {"x-mock": "chunks=3"}
    elif where == "body":
        body, headers = chat_json(model="mock-small", mock="chunks=3"), {}
    else:
        body, headers = chat_json(model="mock-small:chunks=3"), {}
    status, _, data = chat(upstream, body, headers)
    assert status == 200, data
    completion = json.loads(data)
    assert completion["choices"][0]["message"]["content"].split() == ["tok0", "tok1", "tok2"]
    assert completion["usage"]["completion_tokens"] == 3


def test_status_directive(upstream):
    status, _, data = chat(upstream, chat_json(model="mock-small", mock="status=418"))
    assert status == 418
    assert json.loads(data) == {"error": {"message": "mock error 418", "type": "mock_error", "param": None,
                                          "code": "mock_418"}}


def test_echo(upstream):
    body = chat_json(model="mock-small", mock="echo=1", content="h\u00e9llo \"there\"")
    status, _, data = chat(upstream, body)
    assert status == 200
    assert json.loads(data)["choices"][0]["message"]["content"].encode() == body


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_sequence(upstream, include_usage):
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    body = chat_json(model="mock-small", stream=True, **extra)
    objects, _ = stream_events(upstream, body)
    assert objects[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert content_of_chunk_dicts(objects) == expected_tokens(DEFAULT_CHUNKS)
    with_choices = [item for item in objects if item["choices"]]
    assert with_choices[-1]["choices"][0]["finish_reason"] == "stop"
    usage_only = [item for item in objects if not item["choices"]]
    if include_usage:
        assert len(usage_only) == 1 and usage_only[0] is objects[-1]
        usage = usage_only[0]["usage"]
        assert usage["completion_tokens"] == DEFAULT_CHUNKS
        assert usage["prompt_tokens"] == len(body) // 4 + 1
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    else:
        assert usage_only == []


def test_stream_usage_on_last(upstream):
    body = chat_json(model="mock-small", stream=True, mock="usage_on_last=1",
                     stream_options={"include_usage": True})
    objects, _ = stream_events(upstream, body)
    assert all(item["choices"] for item in objects)
    assert objects[-1]["choices"][0]["finish_reason"] == "stop"
    assert objects[-1]["usage"]["completion_tokens"] == DEFAULT_CHUNKS


def test_stream_line_endings_and_comments(upstream):
    _, crlf = stream_events(upstream, chat_json(model="mock-small", stream=True, mock="crlf=1"))
    assert b"\r\n\r\n" in crlf and b"\n" not in crlf.replace(b"\r\n", b"")
    _, cr = stream_events(upstream, chat_json(model="mock-small", stream=True, mock="cr=1"))
    assert b"\n" not in cr and b"\r\r" in cr
    objects, commented = stream_events(upstream, chat_json(model="mock-small", stream=True, mock="comments=1"))
    assert b": keep-alive\n\n" in commented
    assert content_of_chunk_dicts(objects) == expected_tokens(DEFAULT_CHUNKS)


def test_stream_long_lines(upstream):
    objects, _ = stream_events(upstream, chat_json(model="mock-small", stream=True, mock="line_bytes=200000;chunks=2"))
    assert content_of_chunk_dicts(objects) == ["x" * 200000] * 2


@pytest.mark.parametrize("split", [1, 7])
def test_split_writes_are_small_chunks(mock_plain, split):
    with RawConnection(mock_plain.port, timeout_s=10) as connection:
        connection.send(raw_request("POST", "/v1/chat/completions",
                                    chat_json(model="mock-small", stream=True, mock=f"split={split}"), headers=AUTH))
        head = connection.read_head()
        assert head.status == 200
        chunks = connection.read_chunks()
    assert chunks and all(1 <= len(chunk) <= split for chunk in chunks)
    events, problems = parse_sse(b"".join(chunks))
    assert problems == []
    objects, _ = decode_chunk_events(events)
    assert content_of_chunk_dicts(objects) == expected_tokens(DEFAULT_CHUNKS)


def test_disconnect_after(mock_plain):
    with RawConnection(mock_plain.port, timeout_s=10) as connection:
        connection.send(raw_request("POST", "/v1/chat/completions",
                                    chat_json(model="mock-small", stream=True, mock="disconnect_after=3"),
                                    headers=AUTH))
        head = connection.read_head()
        assert head.status == 200
        received = b""
        with pytest.raises(PeerClosed):
            for piece in connection.iter_body(head):
                received += piece
    events, _ = parse_sse(received + b"\n\n")
    objects = [json.loads(event.data) for event in events if event.data != "[DONE]"]
    assert content_of_chunk_dicts(objects) == expected_tokens(3)
    assert b"[DONE]" not in received


def test_gap_and_first_byte(mock_plain):
    started = time.monotonic()
    with RawConnection(mock_plain.port, timeout_s=10) as connection:
        connection.send(raw_request("POST", "/v1/chat/completions",
                                    chat_json(model="mock-small", stream=True, mock="first_byte_ms=300;gap_ms=100;chunks=4"),
                                    headers=AUTH))
        head = connection.read_head()
        head_at = time.monotonic()
        body = b"".join(connection.iter_body(head))
        done_at = time.monotonic()
    assert head_at - started >= 0.25
    assert done_at - head_at >= 0.25
    events, _ = parse_sse(body)
    objects, _ = decode_chunk_events(events)
    assert content_of_chunk_dicts(objects) == expected_tokens(4)
