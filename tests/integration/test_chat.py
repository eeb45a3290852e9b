"""Non-streaming chat completions, /v1/models, /healthz and x-request-id, through the relay.

The relay renames the model to upstream_model by splicing and, when the body
names no max_tokens / max_completion_tokens, splices `"max_tokens":N,` right
after the opening brace (N: what the wallet can pay, capped by the model's
max_output_tokens); every other byte of the body is left alone. The mock's
echo=1 directive hands back the body it received, so these tests can compare
bytes."""

import json

import pytest

from helpers import (DEFAULT_CHUNKS, SPLICED_MAX_TOKENS_DEFAULT, UPSTREAM_API_KEY, bearer, chat_json, curl, curl_key,
                     expected_tokens, http_request, names_output_limit, splice_max_tokens)

MESSAGES = [{"role": "user", "content": "Say hi"}]
CONFIGURED_MODELS = {"ringway-demo", "plain-demo", "dead-demo", "wrongkey-demo", "suffix-demo"}
UPSTREAM_MODEL = "mock-small"


def prompt_tokens_for(body_bytes):
    """The mock's rule: prompt_tokens = (request body bytes / 4) + 1."""
    return len(body_bytes) // 4 + 1


def upstream_body(client_body, model, max_tokens=SPLICED_MAX_TOKENS_DEFAULT):
    """What the relay should send upstream for a non-streaming body: the model value spliced and,
    unless the body names an output limit, "max_tokens":max_tokens spliced after the opening brace."""
    needle = json.dumps(model).encode()
    assert client_body.count(needle) == 1, "test body must name the model exactly once"
    renamed = client_body.replace(needle, json.dumps(UPSTREAM_MODEL).encode())
    return renamed if names_output_limit(client_body) else splice_max_tokens(renamed, max_tokens)


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
                  *curl_key(relay.api_key), "--data-binary", body.decode())
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


@pytest.mark.parametrize("limit_name", ["max_tokens", "max_completion_tokens"])
def test_model_rewritten_and_other_fields_untouched_via_sdk(client, limit_name):
    """The client names its own output limit: it passes through untouched and nothing is spliced."""
    raw = client.chat.completions.with_raw_response.create(
        model="ringway-demo", messages=MESSAGES, temperature=0.25, user="user-1", **{limit_name: 7},
        extra_body={"mock": "echo=1", "custom_field": {"nested": [1, 2.5, "x", None, True]},
                    "note": "h\u00e9llo \u2713 \"quoted\" model"})
    sent = raw.http_response.request.content
    echoed = raw.parse().choices[0].message.content
    received = json.loads(echoed)
    original = json.loads(sent)
    assert received["model"] == UPSTREAM_MODEL
    assert received[limit_name] == 7
    assert {key: value for key, value in received.items() if key != "model"} == \
        {key: value for key, value in original.items() if key != "model"}
    assert echoed.count('"max_tokens"') == (1 if limit_name == "max_tokens" else 0), echoed
    assert echoed.encode() == sent.replace(b'"ringway-demo"', b'"mock-small"'), \
        "relay changed more than the model value"
    assert raw.parse().usage.prompt_tokens == prompt_tokens_for(echoed.encode())


def test_max_tokens_spliced_when_the_client_names_none(client):
    """No max_tokens / max_completion_tokens: exactly `"max_tokens":4096,` (the default cap; this
    customer can pay far more) right after the opening brace, before the renamed model."""
    raw = client.chat.completions.with_raw_response.create(model="ringway-demo", messages=MESSAGES,
                                                           extra_body={"mock": "echo=1"})
    sent = raw.http_response.request.content
    assert sent.startswith(b"{") and b"max_tokens" not in sent
    echoed = raw.parse().choices[0].message.content.encode()
    expected = b'{"max_tokens":%d,' % SPLICED_MAX_TOKENS_DEFAULT + sent[1:].replace(b'"ringway-demo"',
                                                                                    b'"mock-small"')
    assert echoed == expected
    assert echoed == upstream_body(sent, "ringway-demo")
    assert json.loads(echoed)["max_tokens"] == SPLICED_MAX_TOKENS_DEFAULT
    assert raw.parse().usage.prompt_tokens == prompt_tokens_for(echoed)


@pytest.mark.parametrize("limit_name", ["max_tokens", "max_completion_tokens"])
def test_null_output_limit_counts_as_none(relay, limit_name):
    """`"max_tokens": null` is how a client says "no limit": the relay must still bound the output
    it holds money for. The null is replaced by that bound in the field the client chose (a second,
    duplicate member would be ambiguous: many parsers keep the last one, null), and no other limit
    member is added."""
    body = chat_json(mock="echo=1", **{limit_name: None})
    status, _, data = http_request(relay.url + "/v1/chat/completions", "POST", body=body,
                                   headers={"Content-Type": "application/json", **relay.auth})
    assert status == 200, data
    echoed = json.loads(data)["choices"][0]["message"]["content"]
    assert echoed.count(f'"{limit_name}"') == 1, echoed
    other = "max_completion_tokens" if limit_name == "max_tokens" else "max_tokens"
    assert f'"{other}"' not in echoed, echoed
    assert json.loads(echoed)[limit_name] == SPLICED_MAX_TOKENS_DEFAULT, echoed


@pytest.fixture(scope="module")
def capped_relay(relay_factory):
    """ringway-demo with max_output_tokens = 100 (and no prices: the wallet never limits it)."""
    return relay_factory("relay-output-cap", {"model ringway-demo": {"max_output_tokens": 100}})


def test_spliced_max_tokens_is_capped_by_the_model(capped_relay):
    body = chat_json(mock="echo=1")
    status, _, data = http_request(capped_relay.url + "/v1/chat/completions", "POST", body=body,
                                   headers={"Content-Type": "application/json", **capped_relay.auth})
    assert status == 200, data
    echoed = json.loads(data)["choices"][0]["message"]["content"].encode()
    assert echoed == upstream_body(body, "ringway-demo", max_tokens=100)


ODD_BODY = ('{ "messages" : [ {"role":"user","content":"the \\"model\\": \\"ringway-demo\\" trick '
            'h\u00e9llo \u2713 \\"max_tokens\\": 3"} ] ,'
            '\n  "x" : {"model":"ringway-demo", "max_tokens": 9},\t"model" :\t"ringway-demo" , "mock":"echo=1",'
            ' "n": 1e2, "empty": {}, "list": [] %s}')


@pytest.mark.parametrize("limit", ["", ', "max_tokens" :\n 12 ', ',"max_completion_tokens":12'],
                         ids=["no-limit", "max_tokens", "max_completion_tokens"])
def test_model_splice_is_byte_exact_on_odd_json(relay, limit):
    """Odd whitespace, key order, raw UTF-8, escapes and nested "model" / "max_tokens" keys: only the
    top-level model value changes, plus the spliced max_tokens when the top level names no limit."""
    body = (ODD_BODY % limit).encode()
    renamed = body.replace(b'"model" :\t"ringway-demo"', b'"model" :\t"mock-small"')
    assert renamed != body
    expected = renamed if limit else b'{"max_tokens":%d, ' % SPLICED_MAX_TOKENS_DEFAULT + renamed[2:]
    result = curl(relay.url + "/v1/chat/completions", "-H", "Content-Type: application/json",
                  *curl_key(relay.api_key), "--data-binary", body.decode())
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
def test_embeddings_via_sdk(relay, prefix):
    """Embeddings have no output: the model is renamed and nothing is spliced (the mock's prompt_tokens
    counts the bytes it received)."""
    with relay.client(prefix=prefix) as sdk:
        raw = sdk.embeddings.with_raw_response.create(model="ringway-demo", input="hello there")
    assert raw.http_response.status_code == 200
    assert raw.headers.get("x-request-id")
    embeddings = raw.parse()
    assert len(embeddings.data) == 1 and embeddings.data[0].embedding
    sent = raw.http_response.request.content
    assert sent.count(b'"ringway-demo"') == 1
    assert embeddings.usage.prompt_tokens == prompt_tokens_for(sent.replace(b'"ringway-demo"', b'"mock-small"'))


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


UNKNOWN_KEY = "sk-" + "0" * 43  # well-formed, issued to nobody
REQUEST_ID_CASES = {  # name: (method, path, body, expected status or None for any 4xx, key to send)
    "healthz": ("GET", "/healthz", None, 200, None),
    "models": ("GET", "/v1/models", None, 200, None),
    "api-models": ("GET", "/api/v1/models", None, 200, None),
    "chat": ("POST", "/v1/chat/completions", chat_json(), 200, "fixture"),
    "api-chat": ("POST", "/api/v1/chat/completions", chat_json(), 200, "fixture"),
    "stream": ("POST", "/v1/chat/completions", chat_json(stream=True, mock="chunks=2"), 200, "fixture"),
    "no-key": ("POST", "/v1/chat/completions", chat_json(), 401, None),
    "unknown-key": ("POST", "/v1/chat/completions", chat_json(), 401, UNKNOWN_KEY),
    "invalid-json": ("POST", "/v1/chat/completions", b'{"model": "ringway-demo", "messages": [', 400, "fixture"),
    "unknown-model": ("POST", "/v1/chat/completions", chat_json(model="no-such-model"), 404, "fixture"),
    "upstream-429": ("POST", "/v1/chat/completions", chat_json(mock="status=429"), 429, "fixture"),
    "upstream-500": ("POST", "/v1/chat/completions", chat_json(mock="status=500"), 502, "fixture"),
    "upstream-down": ("POST", "/v1/chat/completions", chat_json(model="dead-demo"), 502, "fixture"),
    "unknown-path": ("GET", "/v1/no-such-endpoint", None, None, "fixture"),
}


@pytest.mark.parametrize("case", list(REQUEST_ID_CASES))
def test_every_response_has_a_request_id(relay, case):
    method, path, body, status, key = REQUEST_ID_CASES[case]
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key is not None:
        headers.update(bearer(relay.api_key if key == "fixture" else key))
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
