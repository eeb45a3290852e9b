"""Errors in the OpenAI shape: the relay's own 400/404, the API-key checks (401
with a distinct message for a missing, malformed, unknown, disabled and expired
key), upstream statuses passed through or turned into 502, an unreachable
upstream, a slow upstream (504), and an upstream that dies in the middle of a
stream."""

import json
import time

import openai
import pytest

from helpers import (RawConnection, chat_json, content_of_chunk_dicts, curl, curl_key, decode_chunk_events,
                     expected_tokens, http_request, parse_sse, raw_request)

MESSAGES = [{"role": "user", "content": "Say hi"}]


KEYED = object()  # post_raw's default: the relay fixture's own key


def post_raw(relay, body, path="/v1/chat/completions", authorization=KEYED):
    """POSTs raw bytes with the fixture's key (or the given Authorization value, None for no header);
    returns (status, headers, decoded JSON or None, raw body)."""
    headers = {"Content-Type": "application/json"}
    if authorization is KEYED:
        headers.update(relay.auth)
    elif authorization is not None:
        headers["Authorization"] = authorization
    status, headers, data = http_request(relay.url + path, "POST", body=body, headers=headers)
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    return status, headers, document, data


def assert_error_shape(document, error_type=None, param="<any>", code="<any>"):  # "<any>": not checked
    assert isinstance(document, dict) and set(document) == {"error"}, document
    error = document["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"]
    if error_type is not None:
        assert error["type"] == error_type, error
    if param != "<any>":
        assert error["param"] == param, error
    if code != "<any>":
        assert error["code"] == code, error
    return error


ANY = "<any>"
INVALID_REQUESTS = [
    ("invalid-json", b'{"model": "ringway-demo", "messages": [', None),
    ("empty-body", b"", None),
    ("trailing-garbage", b'{"model": "ringway-demo", "messages": []} x', None),
    ("not-an-object", b'[{"model": "ringway-demo"}]', ANY),
    ("missing-model", b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
    ("model-not-string", b'{"model": 42, "messages": [{"role": "user", "content": "hi"}]}', "model"),
    ("model-null", b'{"model": null, "messages": [{"role": "user", "content": "hi"}]}', "model"),
    ("missing-messages", b'{"model": "ringway-demo"}', "messages"),
    ("messages-not-array", b'{"model": "ringway-demo", "messages": "hi"}', "messages"),
    ("messages-object", b'{"model": "ringway-demo", "messages": {"role": "user"}}', "messages"),
    ("user-not-string", b'{"model": "ringway-demo", "messages": [{"role": "user", "content": "hi"}], "user": 7}',
     "user"),
]


@pytest.mark.parametrize("body,param", [case[1:] for case in INVALID_REQUESTS],
                         ids=[case[0] for case in INVALID_REQUESTS])
def test_invalid_request_raw(relay, body, param):
    status, headers, document, data = post_raw(relay, body)
    assert status == 400, data
    assert headers.get("x-request-id")
    assert_error_shape(document, "invalid_request_error", param=param)


@pytest.mark.parametrize("body,param", [case[1:] for case in INVALID_REQUESTS],
                         ids=[case[0] for case in INVALID_REQUESTS])
def test_invalid_request_sdk(client, body, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/chat/completions", cast_to=object, content=body,
                    options={"headers": {"Content-Type": "application/json"}})
    error = caught.value
    assert error.status_code == 400
    assert error.type == "invalid_request_error"
    if param != ANY:
        assert error.param == param
    assert error.request_id, "x-request-id missing on the 400"


def test_missing_model_via_sdk_create(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=None, messages=MESSAGES)
    assert caught.value.param == "model"


def test_messages_not_array_via_sdk_create(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="ringway-demo", messages="not an array")
    assert caught.value.param == "messages"
    assert caught.value.type == "invalid_request_error"


# ---------------------------------------------------------------------------
# API keys: every /v1 and /api/v1 endpoint but GET /v1/models needs one.

UNKNOWN_KEY = "sk-" + "Zq" * 21 + "Z"  # the shape the relay issues (sk- and 43 letters and digits), issued to nobody


def make_key(relay, **fields):
    """A new key of the fixture's customer through the admin API; returns the key object (with "key")."""
    status, key = relay.admin("POST", "/admin/keys", dict(user_id=relay.user_id, **fields))
    assert status == 201, key
    return key


@pytest.fixture(scope="module")
def disabled_key(relay):
    key = make_key(relay, name="disabled")
    status, changed = relay.admin("POST", f"/admin/keys/{key['id']}/disable")
    assert status == 200 and changed["status"] == "disabled", changed
    return key


@pytest.fixture(scope="module")
def expired_key(relay):
    key = make_key(relay, name="expired", expires_at=1000)  # 1970
    assert key["expired"] is True, key
    return key


def refusals(relay, disabled_key, expired_key):
    """kind -> Authorization header value (None: no header) for every way a key can be refused."""
    return {
        "missing": None,
        "malformed-basic-scheme": "Basic dXNlcjpwYXNzd29yZA==",
        "malformed-not-sk": "Bearer not-a-relay-key",
        "malformed-too-short": "Bearer " + relay.api_key[:-1],
        "malformed-too-long": "Bearer " + relay.api_key + "x",
        "unknown": "Bearer " + UNKNOWN_KEY,
        "disabled": "Bearer " + disabled_key["key"],
        "expired": "Bearer " + expired_key["key"],
    }


def test_key_refusals_are_401_with_a_distinct_message_each(relay, disabled_key, expired_key):
    messages = {}
    for kind, authorization in refusals(relay, disabled_key, expired_key).items():
        status, headers, document, data = post_raw(relay, chat_json(mock="chunks=1"), authorization=authorization)
        assert status == 401, (kind, data)
        assert headers.get("x-request-id"), kind
        error = assert_error_shape(document, "invalid_request_error", code="invalid_api_key")
        messages[kind.split("-")[0]] = messages.get(kind.split("-")[0], set()) | {error["message"]}
        # The refusal may name the key masked, never whole.
        for secret in (relay.api_key, UNKNOWN_KEY, disabled_key["key"], expired_key["key"]):
            assert secret not in error["message"], (kind, error["message"])
    assert all(len(texts) == 1 for texts in messages.values()), messages
    assert len({next(iter(texts)) for texts in messages.values()}) == 5, messages
    assert disabled_key["masked_key"] in next(iter(messages["disabled"]))
    assert expired_key["masked_key"] in next(iter(messages["expired"]))


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", ["unknown", "disabled", "expired", "malformed"])
def test_key_refusals_raise_authentication_error_in_the_sdk(relay, disabled_key, expired_key, kind, stream):
    api_key = {"unknown": UNKNOWN_KEY, "disabled": disabled_key["key"], "expired": expired_key["key"],
               "malformed": "sk-too-short"}[kind]
    with relay.client(api_key=api_key) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk.chat.completions.create(model="ringway-demo", messages=MESSAGES, stream=stream)
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert caught.value.request_id


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/v1/chat/completions", "/v1/embeddings",
                                  "/api/v1/embeddings"])
def test_every_post_endpoint_needs_a_key(relay, path):
    body = (chat_json(mock="chunks=1") if "chat" in path
            else json.dumps({"model": "ringway-demo", "input": "hi"}).encode())
    status, headers, document, data = post_raw(relay, body, path=path, authorization=None)
    assert status == 401, data
    assert headers.get("x-request-id")
    assert_error_shape(document, "invalid_request_error", code="invalid_api_key")


@pytest.mark.parametrize("body", [b'{"model": "ringway-demo", "messages": [', chat_json(model="no-such-model")],
                         ids=["invalid-json", "unknown-model"])
def test_no_key_is_refused_before_the_body_is_judged(relay, body):
    """An unauthenticated client learns nothing about its request body."""
    status, _, document, data = post_raw(relay, body, authorization=None)
    assert status == 401, data
    assert_error_shape(document, code="invalid_api_key")


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
def test_models_and_healthz_need_no_key(relay, prefix):
    status, _, data = http_request(relay.url + prefix + "/models")
    assert status == 200, data
    assert json.loads(data)["object"] == "list"
    status, _, data = http_request(relay.url + "/healthz")
    assert status == 200 and data.strip() == b"ok"


def test_bearer_scheme_is_case_insensitive(relay):
    """RFC 9110: the auth scheme is a case-insensitive token."""
    status, _, _, data = post_raw(relay, chat_json(mock="chunks=1"), authorization="bearer " + relay.api_key)
    assert status == 200, data


def test_disable_enable_and_expiry_take_effect_at_once(relay):
    key = make_key(relay, name="toggled")
    authorization = "Bearer " + key["key"]

    def status_with_key():
        return post_raw(relay, chat_json(mock="chunks=1"), authorization=authorization)[0]

    assert status_with_key() == 200
    assert relay.admin("POST", f"/admin/keys/{key['id']}/disable")[0] == 200
    assert status_with_key() == 401
    assert relay.admin("POST", f"/admin/keys/{key['id']}/enable")[0] == 200
    assert status_with_key() == 200
    assert relay.admin("PATCH", f"/admin/keys/{key['id']}", {"expires_at": 1000})[0] == 200
    assert status_with_key() == 401
    assert relay.admin("PATCH", f"/admin/keys/{key['id']}", {"expires_at": "2999-01-01T00:00:00Z"})[0] == 200
    assert status_with_key() == 200


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_is_404(client, relay, stream):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES, stream=stream)
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert caught.value.request_id
    status, _, document, _ = post_raw(relay, chat_json(model="no-such-model"))
    assert status == 404
    assert_error_shape(document, code="model_not_found")


PASSED_THROUGH = [
    (400, openai.BadRequestError),
    (404, openai.NotFoundError),
    (413, openai.APIStatusError),
    (422, openai.UnprocessableEntityError),
    (429, openai.RateLimitError),
]


def mock_error_body(status):
    return {"message": f"mock error {status}", "type": "mock_error", "param": None, "code": f"mock_{status}"}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status,exception", PASSED_THROUGH, ids=[str(case[0]) for case in PASSED_THROUGH])
def test_upstream_client_errors_pass_through(client, status, exception, stream):
    with pytest.raises(exception) as caught:
        client.chat.completions.create(model="ringway-demo", messages=MESSAGES, stream=stream,
                                       extra_body={"mock": f"status={status}"})
    assert caught.value.status_code == status
    assert caught.value.body == mock_error_body(status)
    assert caught.value.request_id


def test_upstream_429_raw_body_is_the_mocks(relay):
    status, headers, document, _ = post_raw(relay, chat_json(mock="status=429"))
    assert status == 429
    assert document == {"error": mock_error_body(429)}
    assert headers.get("x-request-id")


BECOME_502 = [500, 502, 503, 401, 403, 418]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", BECOME_502)
def test_upstream_server_and_auth_errors_become_502(client, status, stream):
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="ringway-demo", messages=MESSAGES, stream=stream,
                                       extra_body={"mock": f"status={status}"})
    assert caught.value.status_code == 502
    assert caught.value.type == "upstream_error"
    assert caught.value.code == "upstream_error"
    assert caught.value.request_id


def test_upstream_500_raw_shape(relay):
    status, headers, document, _ = post_raw(relay, chat_json(mock="status=500"))
    assert status == 502
    assert headers.get("x-request-id")
    assert headers.get("x-should-retry") == "true", headers
    assert_error_shape(document, "upstream_error", code="upstream_error")


def test_upstream_refusing_our_key_says_do_not_retry(relay):
    """Retrying cannot help until the operator fixes the upstream key: x-should-retry false, so the SDKs
    do not retry the 502; an upstream that is down may come back: true."""
    status, headers, document, _ = post_raw(relay, chat_json(model="wrongkey-demo"))
    assert status == 502 and headers.get("x-should-retry") == "false", headers
    assert_error_shape(document, "upstream_error", code="upstream_error")
    status, headers, document, _ = post_raw(relay, chat_json(model="dead-demo"))
    assert status == 502 and headers.get("x-should-retry") == "true", headers
    status, headers, document, _ = post_raw(relay, chat_json(mock="disconnect_after=1"))
    assert status == 502 and headers.get("x-should-retry") == "true", headers


def test_upstream_refusing_our_key_is_502_not_401(client):
    """The upstream answers 401 to a wrong upstream key: the client must not see a 401 (its own key is fine)."""
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="wrongkey-demo", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert caught.value.type == "upstream_error"


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_down_is_502(client, relay, stream):
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="dead-demo", messages=MESSAGES, stream=stream)
    assert caught.value.status_code == 502
    assert caught.value.request_id
    assert time.monotonic() - started < 10
    status, _, document, _ = post_raw(relay, chat_json(model="dead-demo"))
    assert status == 502
    assert_error_shape(document)


def test_upstream_closes_without_answer_non_stream_is_502(client):
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="ringway-demo", messages=MESSAGES,
                                       extra_body={"mock": "disconnect_after=1"})
    assert caught.value.status_code == 502


@pytest.mark.parametrize("model", ["ringway-demo", "plain-demo"])
def test_mid_stream_disconnect_sdk(client, model):
    stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True,
                                            extra_body={"mock": "disconnect_after=3"})
    received = []
    with pytest.raises(openai.APIError) as caught:
        with stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
    error = caught.value
    assert not isinstance(error, openai.APIConnectionError), \
        "the stream broke at the transport level instead of ending with an error event"
    assert not isinstance(error, openai.APIStatusError)
    assert received == expected_tokens(3)
    assert isinstance(error.body, dict) and isinstance(error.body.get("message"), str)


@pytest.mark.parametrize("model", ["ringway-demo", "plain-demo"])
def test_mid_stream_disconnect_raw_sse(relay, model):
    body = chat_json(model=model, stream=True, mock="disconnect_after=3")
    result = curl(relay.url + "/v1/chat/completions", "-N", "-H", "Content-Type: application/json",
                  *curl_key(relay.api_key), "--data-binary", body.decode())
    assert result.returncode == 0, f"curl: {result.stderr} (the response did not end cleanly)"
    assert result.status == 200
    events, problems = parse_sse(result.body)
    assert problems == []
    assert events, result.body
    final = json.loads(events[-1].data)
    assert set(final) == {"error"}, final
    assert isinstance(final["error"].get("message"), str) and final["error"]["message"]
    objects, saw_done = decode_chunk_events(events[:-1])
    assert not saw_done
    assert content_of_chunk_dicts(objects) == expected_tokens(3)


@pytest.fixture(scope="module")
def impatient_relay(relay_factory):
    """A relay that waits at most 1 s for the upstream's first byte (key named after config_t)."""
    return relay_factory("relay-first-byte", {"timeouts": {"upstream_first_byte_ms": 1000}})


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_first_byte_timeout_is_504(impatient_relay, stream):
    with impatient_relay.client() as sdk:
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as caught:
            sdk.chat.completions.create(model="ringway-demo", messages=MESSAGES, stream=stream,
                                        extra_body={"mock": "first_byte_ms=4000"})
        elapsed = time.monotonic() - started
    assert caught.value.status_code == 504
    assert caught.value.response.headers.get("x-should-retry") == "true"
    assert elapsed < 3.5, "the relay waited for the upstream instead of timing out"
    with impatient_relay.client() as sdk:
        completion = sdk.chat.completions.create(model="ringway-demo", messages=MESSAGES,
                                                 extra_body={"mock": "first_byte_ms=100;chunks=1"})
        assert completion.choices[0].message.content.split() == ["tok0"]


@pytest.fixture(scope="module")
def one_stream_relay(relay_factory):
    """One event-loop thread with room for a single active request."""
    return relay_factory("relay-one-stream", {"server": {"threads": 1}, "limits": {"streams_per_thread": 1}})


def test_pool_exhausted_is_503_server_busy(one_stream_relay):
    with RawConnection(one_stream_relay.port, timeout_s=20) as busy:
        busy.send(raw_request("POST", "/v1/chat/completions", chat_json(stream=True, mock="gap_ms=200;chunks=6"),
                              headers=one_stream_relay.auth))
        head = busy.read_head()
        assert head.status == 200
        pieces = busy.iter_body(head, timeout_s=20)
        received = b""
        for piece in pieces:
            received += piece
            if b"tok0 " in received:
                break
        # The only stream slot is taken until this stream ends (about 1 s from now).
        status, headers, data = http_request(one_stream_relay.url + "/v1/chat/completions", "POST",
                                             body=chat_json(mock="chunks=1"),
                                             headers={"Content-Type": "application/json", **one_stream_relay.auth})
        assert status == 503, data
        assert headers.get("x-request-id")
        assert_error_shape(json.loads(data), "server_error", code="server_busy")
        for piece in pieces:
            received += piece
    assert received.rstrip().endswith(b"data: [DONE]")
    status, _, data = http_request(one_stream_relay.url + "/v1/chat/completions", "POST",
                                   body=chat_json(mock="chunks=1"),
                                   headers={"Content-Type": "application/json", **one_stream_relay.auth})
    assert status == 200, data
