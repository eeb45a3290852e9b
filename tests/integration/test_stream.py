"""Streaming chat completions through the relay: every event, in order, whatever
the upstream's line endings, comments, write boundaries and line lengths; the
usage-only chunk stripped unless the client asked for it; events forwarded as
they arrive."""

import json
import time

import pytest

from conftest import make_customer
from helpers import (DEFAULT_CHUNKS, SPLICED_MAX_TOKENS_DEFAULT, RawConnection, chat_json, content_of_chunk_dicts,
                     curl, curl_key, decode_chunk_events, expected_tokens, http_request, parse_sse, raw_request,
                     usage_records, wait_for)

MESSAGES = [{"role": "user", "content": "Stream please"}]


def run_stream(client, model="ringway-demo", mock=None, include_usage=None):
    """Streams one completion with the SDK; returns the list of ChatCompletionChunk objects."""
    options = {}
    if include_usage is not None:
        options["stream_options"] = {"include_usage": include_usage}
    stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True,
                                            extra_body={"mock": mock} if mock else None, **options)
    with stream:
        return list(stream)


def contents(chunks):
    return [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]


def usage_only_chunks(chunks):
    return [chunk for chunk in chunks if not chunk.choices]


def assert_well_formed(chunks, count):
    """Role chunk first, then `count` content chunks, the last with finish_reason "stop"."""
    assert chunks, "no chunks"
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1, "chunks of one stream carry different ids"
    assert chunks[0].choices and chunks[0].choices[0].delta.role == "assistant"
    with_choices = [chunk for chunk in chunks if chunk.choices]
    finish_reasons = [chunk.choices[0].finish_reason for chunk in with_choices]
    assert finish_reasons[-1] == "stop"
    assert finish_reasons.count("stop") == 1
    assert all(reason is None for reason in finish_reasons[:-1])
    assert len(contents(chunks)) == count


def assert_usage(usage, completion_tokens):
    assert usage is not None
    assert usage.completion_tokens == completion_tokens
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("model", ["ringway-demo", "plain-demo"])
def test_stream_complete_and_in_order_usage_stripped(client, model):
    chunks = run_stream(client, model=model)
    assert_well_formed(chunks, DEFAULT_CHUNKS)
    assert contents(chunks) == expected_tokens(DEFAULT_CHUNKS)
    assert usage_only_chunks(chunks) == [], "usage-only chunk was not stripped"
    assert all(chunk.usage is None for chunk in chunks)


def test_stream_usage_stripped_when_client_says_false(client):
    chunks = run_stream(client, include_usage=False, mock="chunks=4")
    assert contents(chunks) == expected_tokens(4)
    assert usage_only_chunks(chunks) == []
    assert all(chunk.usage is None for chunk in chunks)


@pytest.mark.parametrize("model", ["ringway-demo", "plain-demo"])
def test_stream_usage_present_when_asked(client, model):
    chunks = run_stream(client, model=model, include_usage=True)
    assert_well_formed(chunks, DEFAULT_CHUNKS)
    assert contents(chunks) == expected_tokens(DEFAULT_CHUNKS)
    usage_chunks = usage_only_chunks(chunks)
    assert len(usage_chunks) == 1
    assert usage_chunks[0] is chunks[-1], "the usage-only chunk must be the last one"
    assert_usage(usage_chunks[0].usage, DEFAULT_CHUNKS)


@pytest.mark.parametrize("include_usage", [None, False, True])
def test_relay_always_asks_upstream_for_usage(client, include_usage):
    """echo=1: the first content delta is the body the mock received."""
    chunks = run_stream(client, mock="echo=1;chunks=3", include_usage=include_usage)
    echoed = contents(chunks)[0]
    upstream = json.loads(echoed)
    assert upstream["model"] == "mock-small"
    assert upstream["stream"] is True
    assert upstream["stream_options"]["include_usage"] is True
    assert upstream["messages"] == MESSAGES
    assert upstream["mock"] == "echo=1;chunks=3"
    assert upstream["max_tokens"] == SPLICED_MAX_TOKENS_DEFAULT
    assert echoed.count('"stream_options"') == 1, "stream_options appears twice upstream"
    assert echoed.count('"max_tokens"') == 1, "max_tokens appears twice upstream"
    if include_usage:
        usage_chunks = usage_only_chunks(chunks)
        assert len(usage_chunks) == 1
        usage = usage_chunks[0].usage
        assert usage.completion_tokens == 3
        assert usage.prompt_tokens == len(echoed.encode()) // 4 + 1, "usage does not match the body upstream"
    else:
        assert usage_only_chunks(chunks) == []


@pytest.mark.parametrize("include_usage", [None, True])
def test_usage_on_last_content_chunk(client, include_usage):
    chunks = run_stream(client, mock="usage_on_last=1", include_usage=include_usage)
    assert contents(chunks) == expected_tokens(DEFAULT_CHUNKS)
    assert usage_only_chunks(chunks) == []
    if include_usage:
        last_content = [chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.content][-1]
        assert last_content.choices[0].finish_reason == "stop"
        assert_usage(last_content.usage, DEFAULT_CHUNKS)


SHAPES = ["crlf=1", "cr=1", "comments=1", "split=1", "split=7", "split=7;crlf=1;comments=1", "cr=1;split=1",
          "split=3;cr=1;comments=1"]


@pytest.mark.parametrize("include_usage", [None, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_stream_shapes(client, shape, include_usage):
    chunks = run_stream(client, mock=f"{shape};chunks=6", include_usage=include_usage)
    assert_well_formed(chunks, 6)
    assert contents(chunks) == expected_tokens(6)
    if include_usage:
        assert len(usage_only_chunks(chunks)) == 1
        assert_usage(chunks[-1].usage, 6)
    else:
        assert usage_only_chunks(chunks) == []


@pytest.mark.parametrize("model", ["ringway-demo", "plain-demo"])
def test_stream_shapes_plain_and_tls_split_one(client, model):
    chunks = run_stream(client, model=model, mock="split=1;crlf=1;comments=1", include_usage=True)
    assert contents(chunks) == expected_tokens(DEFAULT_CHUNKS)
    assert_usage(chunks[-1].usage, DEFAULT_CHUNKS)


@pytest.mark.parametrize("include_usage", [None, True])
@pytest.mark.parametrize("shape", ["", "crlf=1;", "cr=1;split=4096;"])
def test_very_long_lines(client, shape, include_usage):
    line_bytes = 200000
    chunks = run_stream(client, mock=f"{shape}line_bytes={line_bytes};chunks=4", include_usage=include_usage)
    got = contents(chunks)
    assert [len(content) for content in got] == [line_bytes] * 4
    assert all(content == "x" * line_bytes for content in got)
    if include_usage:
        assert len(usage_only_chunks(chunks)) == 1
        assert_usage(chunks[-1].usage, 4)
    else:
        assert usage_only_chunks(chunks) == []


STREAM_OPTIONS_MEMBER = b'"stream_options":{"include_usage":true},'


@pytest.mark.parametrize("limit", [None, 9], ids=["spliced", "explicit"])
def test_stream_upstream_body_is_byte_exact(client, limit):
    """The exact bytes upstream for a stream whose client named no stream_options: the model value
    renamed, and two members inserted right after the opening brace, stream_options and (when the
    client named no limit) "max_tokens":4096. Their relative order is not specified, so either is
    accepted; nothing else may change."""
    options = {"max_tokens": limit} if limit is not None else {}
    raw = client.chat.completions.with_raw_response.create(
        model="ringway-demo", messages=MESSAGES, stream=True, extra_body={"mock": "echo=1;chunks=1"}, **options)
    sent = raw.http_response.request.content
    with raw.parse() as stream:
        echoed = contents(list(stream))[0].encode()
    assert sent.startswith(b"{") and sent.count(b'"ringway-demo"') == 1
    rest = sent[1:].replace(b'"ringway-demo"', b'"mock-small"')
    if limit is None:
        max_tokens_member = b'"max_tokens":%d,' % SPLICED_MAX_TOKENS_DEFAULT
        allowed = {b"{" + STREAM_OPTIONS_MEMBER + max_tokens_member + rest,
                   b"{" + max_tokens_member + STREAM_OPTIONS_MEMBER + rest}
    else:
        allowed = {b"{" + STREAM_OPTIONS_MEMBER + rest}
    assert echoed in allowed, echoed


def test_stream_response_headers(client):
    raw = client.chat.completions.with_raw_response.create(model="ringway-demo", messages=MESSAGES, stream=True,
                                                           extra_body={"mock": "chunks=2"})
    assert raw.http_response.status_code == 200
    assert raw.headers.get("x-request-id")
    assert raw.headers.get("content-type", "").startswith("text/event-stream")
    with raw.parse() as stream:
        assert contents(list(stream)) == expected_tokens(2)


def test_paced_stream_arrives_incrementally_raw(relay):
    """gap_ms=400: when tok0 arrives, tok1 and [DONE] must not have arrived with it."""
    body = chat_json(stream=True, mock="gap_ms=400;chunks=5")
    with RawConnection(relay.port, timeout_s=20) as connection:
        connection.send(raw_request("POST", "/v1/chat/completions", body, headers=relay.auth))
        head = connection.read_head()
        assert head.status == 200
        pieces = connection.iter_body(head, timeout_s=20)
        received = b""
        for piece in pieces:
            received += piece
            if b'tok0 ' in received:
                break
        else:
            pytest.fail(f"stream ended without tok0: {received[:500]!r}")
        first_at = time.monotonic()
        assert b"tok1 " not in received, "tok0 was held back until tok1 arrived"
        assert b"[DONE]" not in received, "the whole stream arrived at once"
        for piece in pieces:
            received += piece
        done_at = time.monotonic()
    events, problems = parse_sse(received)
    assert problems == []
    objects, saw_done = decode_chunk_events(events)
    assert saw_done
    assert content_of_chunk_dicts(objects) == expected_tokens(5)
    # Four more gaps of 400 ms were still to come; a buffering relay would deliver them at once.
    assert done_at - first_at > 0.8


def test_paced_stream_arrives_incrementally_sdk(client):
    stream = client.chat.completions.create(model="ringway-demo", messages=MESSAGES, stream=True,
                                            extra_body={"mock": "gap_ms=300;chunks=5"})
    arrivals = []
    with stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append((time.monotonic(), chunk.choices[0].delta.content))
        done_at = time.monotonic()
    assert [content for _, content in arrivals] == expected_tokens(5)
    first_at = arrivals[0][0]
    assert done_at - first_at > 0.6, "the first event did not arrive before the rest of the stream"


@pytest.mark.parametrize("shape", [None, "crlf=1", "cr=1;comments=1", "split=1", "line_bytes=100000;chunks=3"])
@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
def test_curl_raw_stream_is_valid_sse(relay, shape, prefix):
    body = chat_json(stream=True, mock=shape)
    result = curl(relay.url + prefix + "/chat/completions", "-N", "-H", "Content-Type: application/json",
                  *curl_key(relay.api_key), "--data-binary", body.decode())
    assert result.returncode == 0, result.stderr
    assert result.status == 200, result.body[:500]
    assert (result.header("content-type") or "").startswith("text/event-stream")
    assert result.header("x-request-id")
    events, problems = parse_sse(result.body)
    assert problems == []
    assert events and events[-1].data == "[DONE]"
    assert result.body.rstrip(b"\r\n").endswith(b"data: [DONE]")
    objects, saw_done = decode_chunk_events(events)
    assert saw_done
    assert all(item["object"] == "chat.completion.chunk" for item in objects)
    assert all(item["choices"] for item in objects), "usage-only chunk reached a client that did not ask"
    got = content_of_chunk_dicts(objects)
    if shape and "line_bytes" in shape:
        assert got == ["x" * 100000] * 3
    else:
        assert got == expected_tokens(DEFAULT_CHUNKS)


# ---- SSE keep-alive comments during upstream silences ----

@pytest.fixture(scope="module")
def keepalive_relay(relay_factory):
    return relay_factory("relay-keepalive", {"relay": {"sse_keepalive_ms": 200},
                                             "timeouts": {"upstream_idle_ms": 1500}})


def stream_raw(relay, mock, api_key=None):
    headers = {"Content-Type": "application/json",
               **({"Authorization": f"Bearer {api_key}"} if api_key else relay.auth)}
    started = time.monotonic()
    status, _, data = http_request(relay.url + "/v1/chat/completions", "POST",
                                   body=chat_json(stream=True, mock=mock), headers=headers, timeout_s=20)
    return status, data, time.monotonic() - started


def test_keepalive_comments_fill_upstream_silences(keepalive_relay):
    """Gaps of 700 ms between events with keep-alives every 200 ms: comments arrive between events (never
    inside one), the events are whole and in order, and the request is billed as usual."""
    relay = keepalive_relay
    user_id, key = make_customer(relay, "keepalive@example.com")
    status, data, _ = stream_raw(relay, "gap_ms=700;chunks=3", api_key=key)
    assert status == 200, data
    events, problems = parse_sse(data)
    assert not problems, problems
    assert data.count(b": keep-alive\n\n") >= 3, data.decode()
    objects, saw_done = decode_chunk_events(events)
    assert saw_done
    assert "".join(content_of_chunk_dicts(objects)) == "".join(expected_tokens(3))
    # The comment is a line of its own between events: never inside an event's lines.
    assert b"\n\n: keep-alive\n\n" in data
    records = wait_for(lambda: usage_records(relay, user_id), 5)
    assert len(records) == 1 and records[0]["completion_tokens"] == 3, records


def test_keepalive_stream_with_the_sdk(keepalive_relay):
    stream = keepalive_relay.client().chat.completions.create(
        model="ringway-demo", messages=MESSAGES, stream=True, extra_body={"mock": "gap_ms=500;chunks=3"})
    with stream:
        chunks = list(stream)
    assert_well_formed(chunks, 3)
    assert contents(chunks) == expected_tokens(3)


def test_keepalive_silence_past_the_idle_gap_still_ends_the_stream(keepalive_relay):
    """Keep-alives do not hide a dead upstream: after upstream_idle_ms of silence the stream ends with the
    final SSE error event, long before the upstream would have gone on."""
    status, data, elapsed = stream_raw(keepalive_relay, "gap_ms=6000;chunks=2")
    assert status == 200, data
    assert elapsed < 5, f"the stalled stream ran {elapsed:.1f} s"
    events, problems = parse_sse(data)
    assert not problems, problems
    assert b": keep-alive" in data
    last = json.loads(events[-1].data)
    assert last["error"]["code"] == "upstream_error", events[-1].data


def test_keepalive_comments_off_by_default(relay):
    status, data, _ = stream_raw(relay, "gap_ms=400;chunks=2")
    assert status == 200, data
    assert b"keep-alive" not in data
