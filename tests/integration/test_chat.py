"""Non-streaming chat completions, /v1/models, /healthz and x-request-id, through the relay.

The relay renames the model to upstream_model by splicing and leaves every
other byte of the body alone; the mock's echo=1 directive hands back the body
it received, so these tests can compare bytes."""

import json

import pytest

from helpers import (DEFAULT_CHUNKS, UPSTREAM_API_KEY, chat_json, curl, expected_tokens, http_request)

MESSAGES = [{"role": "user", "content": "Say hi"}]
CONFIGURED_MODELS = {"ringway-demo", "plain-demo", "dead-demo", "wrongkey-demo", "suffix-demo"}
UPSTREAM_MODEL = "mock-small"


def prompt_tokens_for(body_bytes):
    """The mock's rule: prompt_tokens = (request body bytes / 4) + 1."""
    return len(body_bytes) // 4 + 1


def upstream_body(client_body, model):
    """What the relay should send upstream for a non-streaming body: the model value spliced."""
    needle = json.dumps(model).encode()
    assert client_body.count(needle) == 1, "test body must name the model exactly once"
    return client_body.replace(needle, json.dumps(UPSTREAM_MODEL).encode())


def ask_mock_directly(upstream, body):
    """POSTs body to the mock's chat endpoint with the upstream key; returns the decoded JSON."""
    status, _, data = http_request(upstream.base_url + "/chat/completions", "POST", body=body,
                                   headers={"Content-Type": "application/json",
                                            "Authorization": f"Bearer {UPSTREAM_API_KEY}"},
                                   ssl_context=upstream.ssl_context)
    assert status == 200, data
    return json.loads(data)


def test_healthz(relay):
    status, headers, body = http_request(relay.url + "/healthz")
    assert status == 200
    assert body.strip() == b"ok"
    assert headers.get("x-request-id")


@pytest.mark.parametrize("model,upstream_fixture", [("ringway-demo", "mock"), ("plain-demo", "mock_plain")])
def test_non_streaming_via_sdk_matches_the_mock(client, request, model, upstream_fixture):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    assert raw.http_response.status_code == 200
    assert raw.headers.get("x-request-id")
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.split() == [token.strip() for token in expected_tokens(DEFAULT_CHUNKS)]
    assert choice.finish_reason == "stop"

    sent = raw.http_response.request.content
    spliced = upstream_body(sent, model)
    usage = completion.usage
    assert usage.completion_tokens == DEFAULT_CHUNKS
    assert usage.prompt_tokens == prompt_tokens_for(spliced)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    relayed = json.loads(raw.http_response.content)
    direct = ask_mock_directly(request.getfixturevalue(upstream_fixture), spliced)
    assert relayed["choices"][0]["message"] == direct["choices"][0]["message"]
    assert relayed["usage"] == direct["usage"]


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
def test_non_streaming_via_curl(relay, prefix):
    body = chat_json(mock="chunks=5")
    result = curl(relay.url + prefix + "/chat/completions", "-H", "Content-Type: application/json",
                  "--data-binary", body.decode())
    assert result.returncode == 0, result.stderr
    assert result.status == 200, result.body
    assert result.header("x-request-id")
    assert (result.header("content-type") or "").startswith("application/json")
    completion = json.loads(result.body)
    assert completion["choices"][0]["message"]["content"].split() == ["tok0", "tok1", "tok2", "tok3", "tok4"]
    assert completion["usage"]["completion_tokens"] == 5
    assert completion["usage"]["prompt_tokens"] == prompt_tokens_for(upstream_body(body, "ringway-demo"))


def test_sdk_on_api_v1_prefix(relay):
    with relay.client(prefix="/api/v1") as sdk:
        completion = sdk.chat.completions.create(model="ringway-demo", messages=MESSAGES,
                                                 extra_body={"mock": "chunks=2"})
        assert completion.choices[0].message.content.split() == ["tok0", "tok1"]
        assert completion.usage.completion_tokens == 2
        assert {model.id for model in sdk.models.list()} == CONFIGURED_MODELS


def test_upstream_model_directives_from_config(client):
    """suffix-demo maps to upstream_model "mock-small:chunks=3" (directives in the model name)."""
    completion = client.chat.completions.create(model="suffix-demo", messages=MESSAGES)
    assert completion.choices[0].message.content.split() == ["tok0", "tok1", "tok2"]
    assert completion.usage.completion_tokens == 3


def test_model_rewritten_and_other_fields_untouched_via_sdk(client):
    raw = client.chat.completions.with_raw_response.create(
        model="ringway-demo", messages=MESSAGES, temperature=0.25, max_tokens=7, user="user-1",
        extra_body={"mock": "echo=1", "custom_field": {"nested": [1, 2.5, "x", None, True]},
                    "note": "h\u00e9llo \u2713 \"quoted\" model"})
    sent = raw.http_response.request.content
    echoed = raw.parse().choices[0].message.content
    received = json.loads(echoed)
    original = json.loads(sent)
    assert received["model"] == UPSTREAM_MODEL
    assert {key: value for key, value in received.items() if key != "model"} == \
        {key: value for key, value in original.items() if key != "model"}
    assert echoed.encode() == upstream_body(sent, "ringway-demo"), "relay changed more than the model value"
    assert raw.parse().usage.prompt_tokens == prompt_tokens_for(echoed.encode())


def test_model_splice_is_byte_exact_on_odd_json(relay):
    """Odd whitespace, key order, raw UTF-8, escapes and a nested "model" key: only the top-level
    model value changes."""
    body = ('{ "messages" : [ {"role":"user","content":"the \\"model\\": \\"ringway-demo\\" trick h\u00e9llo \u2713"} ] ,'
            '\n  "x" : {"model":"ringway-demo"},\t"model" :\t"ringway-demo" , "mock":"echo=1",'
            ' "n": 1e2, "empty": {}, "list": [] }').encode()
    expected = body.replace(b'"model" :\t"ringway-demo"', b'"model" :\t"mock-small"')
    assert expected != body
    result = curl(relay.url + "/v1/chat/completions", "-H", "Content-Type: application/json",
                  "--data-binary", body.decode())
    assert result.status == 200, result.body
    echoed = json.loads(result.body)["choices"][0]["message"]["content"]
    assert echoed.encode() == expected


def test_large_body_within_limit(client):
    content = "a" * (64 * 1024)
    raw = client.chat.completions.with_raw_response.create(
        model="ringway-demo", messages=[{"role": "user", "content": content}], extra_body={"mock": "chunks=1"})
    completion = raw.parse()
    assert completion.choices[0].message.content.split() == ["tok0"]
    assert completion.usage.prompt_tokens == prompt_tokens_for(upstream_body(raw.http_response.request.content,
                                                                             "ringway-demo"))


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
def test_models_list_shape(relay, prefix):
    status, headers, body = http_request(relay.url + prefix + "/models")
    assert status == 200
    assert headers.get("x-request-id")
    document = json.loads(body)
    assert document["object"] == "list"
    assert isinstance(document["data"], list)
    assert {entry["id"] for entry in document["data"]} == CONFIGURED_MODELS
    for entry in document["data"]:
        assert entry["object"] == "model"
        assert isinstance(entry["created"], int) and not isinstance(entry["created"], bool)
        assert isinstance(entry["owned_by"], str) and entry["owned_by"]


def test_models_list_via_sdk(client):
    models = list(client.models.list())
    assert {model.id for model in models} == CONFIGURED_MODELS
    assert all(model.object == "model" for model in models)


REQUEST_ID_CASES = {
    "healthz": ("GET", "/healthz", None, 200),
    "models": ("GET", "/v1/models", None, 200),
    "api-models": ("GET", "/api/v1/models", None, 200),
    "chat": ("POST", "/v1/chat/completions", chat_json(), 200),
    "api-chat": ("POST", "/api/v1/chat/completions", chat_json(), 200),
    "stream": ("POST", "/v1/chat/completions", chat_json(stream=True, mock="chunks=2"), 200),
    "invalid-json": ("POST", "/v1/chat/completions", b'{"model": "ringway-demo", "messages": [', 400),
    "unknown-model": ("POST", "/v1/chat/completions", chat_json(model="no-such-model"), 404),
    "upstream-429": ("POST", "/v1/chat/completions", chat_json(mock="status=429"), 429),
    "upstream-500": ("POST", "/v1/chat/completions", chat_json(mock="status=500"), 502),
    "upstream-down": ("POST", "/v1/chat/completions", chat_json(model="dead-demo"), 502),
    "unknown-path": ("GET", "/v1/no-such-endpoint", None, None),
}


@pytest.mark.parametrize("case", list(REQUEST_ID_CASES))
def test_every_response_has_a_request_id(relay, case):
    method, path, body, status = REQUEST_ID_CASES[case]
    headers = {"Content-Type": "application/json"} if body is not None else {}
    got_status, got_headers, data = http_request(relay.url + path, method, body=body, headers=headers)
    if status is None:
        assert 400 <= got_status < 500, data
    else:
        assert got_status == status, data
    assert got_headers.get("x-request-id"), f"no x-request-id on a {got_status} response"


def test_request_ids_are_distinct(relay):
    seen = set()
    for _ in range(8):
        _, headers, _ = http_request(relay.url + "/healthz")
        seen.add(headers.get("x-request-id"))
    assert None not in seen
    assert len(seen) == 8
