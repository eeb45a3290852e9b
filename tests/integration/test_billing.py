"""Billing on the request path (issue 4), end to end against the real relay and mock, money exact:

- every refusal maps to the openai SDK's exception class (401 AuthenticationError for a missing,
  malformed, unknown, disabled and expired key, each with its own message; 402 APIStatusError for
  an empty wallet, a suspended wallet and a key at its spend cap; 403 PermissionDeniedError for a
  model outside the key's allowlist; 404 NotFoundError for an unknown model), and none of them
  reaches the upstream (the mock's request counter);
- an upstream failure before any output costs nothing;
- a request without max_tokens gets the largest one the wallet can pay for (seen through the
  mock's echo), computed here with the ledger's rule;
- a client that disconnects mid-stream is billed once, for the usage the upstream reported
  while the relay drained the rest;
- key spend caps refuse exactly the request that would pass the cap;
- 600 concurrent requests on one small wallet across two relay threads: never below zero, and the
  usage records add up to the balance decrease exactly.

The mock reports usage as prompt_tokens = (bytes of the body it received) / 4 + 1 and
completion_tokens = chunks. The relay rewrites only the model name in a body that already names
max_tokens and stream_options.include_usage, so the received size is known here exactly."""

import asyncio
import json
import random
import threading
import time

import openai
import pytest

from conftest import UPSTREAM_API_KEY, start_mock
from helpers import RawConnection, http_request, raw_request

PRICES = {"input_price": "2.00", "cached_input_price": "1.00", "output_price": "8.00"}
PERCALL_PRICES = {"input_price": "0.50", "output_price": "1.50", "request_price": "0.010000"}
UPSTREAM_MODEL = "mock-small"
UNKNOWN_KEY = "sk-" + "Zq" * 21 + "Z"  # the shape the relay issues, issued to nobody
MESSAGES = [{"role": "user", "content": "Say hi"}]


# ---------------------------------------------------------------------------
# Money, as the ledger computes it (integers only).


def money_micros(text):
    units, _, fraction = text.partition(".")
    assert len(fraction) <= 6
    return int(units) * 1_000_000 + int((fraction + "000000")[:6])


def price_micros(prices):
    input_price = money_micros(prices.get("input_price", "0"))
    return {"input": input_price,
            "cached": money_micros(prices.get("cached_input_price", prices.get("input_price", "0"))),
            "output": money_micros(prices.get("output_price", "0")),
            "request": money_micros(prices.get("request_price", "0"))}


def ceil_div(numerator, denominator):
    return -(-numerator // denominator)


def cost_micros(prices, prompt_tokens, completion_tokens, cached_tokens=0):
    """ceil((uncached_prompt × input + cached × cached_input + completion × output) / 1e6) + request_price"""
    price = price_micros(prices)
    exact = (prompt_tokens - cached_tokens) * price["input"] + cached_tokens * price["cached"] \
        + completion_tokens * price["output"]
    return ceil_div(exact, 1_000_000) + price["request"]


def hold_micros(prices, body_bytes, max_tokens):
    """The hold at admission: the request body's bytes bound the prompt, at the dearer input price."""
    price = price_micros(prices)
    exact = body_bytes * max(price["input"], price["cached"]) + max_tokens * price["output"]
    return ceil_div(exact, 1_000_000) + price["request"]


def affordable_max_tokens(prices, available, body_bytes, model_max=4096):
    """The largest n in [1, model_max] with hold(body, n) <= available; 0 when none."""
    price = price_micros(prices)
    budget = (available - price["request"]) * 1_000_000 - body_bytes * max(price["input"], price["cached"])
    if price["output"] == 0:
        return model_max if budget >= 0 else 0
    return max(0, min(model_max, budget // price["output"]))


def mock_prompt_tokens(received_bytes):
    return received_bytes // 4 + 1


def upstream_size(body, model="ringway-demo"):
    """Bytes the mock receives for a client body that names max_tokens (and include_usage if it
    streams): the same bytes with the public model name replaced by the upstream one."""
    assert body.count(model.encode()) == 1
    return len(body) - len(model) + len(UPSTREAM_MODEL)


def chat_bytes(model="ringway-demo", stream=False, max_tokens=None, mock=None, content="Say hi"):
    document = {"model": model, "messages": [{"role": "user", "content": content}]}
    if stream:
        document["stream"] = True
        document["stream_options"] = {"include_usage": True}
    if max_tokens is not None:
        document["max_tokens"] = max_tokens
    if mock is not None:
        document["mock"] = mock
    return json.dumps(document, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------
# Fixtures: a mock of our own (so its request counter counts only us) behind a priced relay.


@pytest.fixture(scope="module")
def counted_mock(mock_bin, workdir):
    upstream = start_mock(mock_bin, workdir, "mock-billing")
    yield upstream
    upstream.process.stop()


def billing_overrides(counted_mock, **server):
    return {
        "server": server,
        "upstream counted": {"base_url": counted_mock.base_url, "api_key": UPSTREAM_API_KEY},
        "model ringway-demo": dict(PRICES, upstream="counted", upstream_model=UPSTREAM_MODEL),
        "model percall-demo": dict(PERCALL_PRICES, upstream="counted", upstream_model=UPSTREAM_MODEL),
        "model other-demo": dict(PRICES, upstream="counted", upstream_model=UPSTREAM_MODEL),
        "model dead-demo": dict(PRICES),
    }


@pytest.fixture(scope="module")
def relay(relay_factory, counted_mock):
    return relay_factory("billing", billing_overrides(counted_mock))


_customers = iter(range(1, 1_000_000))


def customer(relay, balance, **key_fields):
    """A new user with `balance` (money text) and a key; returns (user id, key text, key object)."""
    status, user = relay.admin("POST", "/admin/users", {"email": f"payer{next(_customers)}@billing.test",
                                                        "balance": balance})
    assert status == 201, user
    status, key = relay.admin("POST", "/admin/keys", dict(user_id=user["id"], **key_fields))
    assert status == 201, key
    return user["id"], key["key"], key


def sdk(relay, api_key, **options):
    return openai.OpenAI(base_url=relay.url + "/v1", api_key=api_key, max_retries=0, timeout=30, **options)


def mock_requests(upstream):
    status, _, data = http_request(upstream.url + "/mock/stats")
    assert status == 200, data
    return json.loads(data)["requests"]


def balance_of(relay, api_key):
    status, _, data = http_request(relay.url + "/billing/balance", headers={"Authorization": f"Bearer {api_key}"})
    assert status == 200, data
    return json.loads(data)["balance"]


def user_of(relay, user_id):
    status, user = relay.admin("GET", f"/admin/users/{user_id}")
    assert status == 200, user
    return user


def usage_records(relay, user_id):
    """Every usage record of the user, from the admin export (JSON lines), newest first."""
    status, payload = relay.admin("GET", f"/admin/usage?user_id={user_id}&format=jsonl&limit=100000")
    assert status == 200, payload
    if isinstance(payload, (dict, list)):  # a single line parses as JSON on its own
        return [payload] if isinstance(payload, dict) else payload
    return [json.loads(line) for line in payload.decode().splitlines() if line]


def post(relay, body, api_key, timeout_s=30):
    """Raw POST /v1/chat/completions; returns (status, headers, body bytes)."""
    return http_request(relay.url + "/v1/chat/completions", "POST", body=body, timeout_s=timeout_s,
                        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"})


# ---------------------------------------------------------------------------
# Every refusal -> its SDK exception class, before any upstream call.


def create(client, stream, model="ringway-demo", **extra):
    response = client.chat.completions.create(model=model, messages=MESSAGES, stream=stream,
                                              extra_body={"mock": "chunks=2"}, **extra)
    if stream:
        list(response)
    return response


@pytest.mark.parametrize("stream", [False, True])
def test_401_refusals_are_authentication_errors_with_distinct_messages(relay, counted_mock, stream):
    _, _, disabled = customer(relay, "1.00", name="to-disable")
    status, changed = relay.admin("POST", f"/admin/keys/{disabled['id']}/disable")
    assert status == 200 and changed["status"] == "disabled", changed
    _, _, expired = customer(relay, "1.00", expires_at=1000)  # 1970
    clients = {
        # The SDK sends no Authorization header at all when it is omitted per request.
        "missing": ("unused", {"extra_headers": {"Authorization": openai.Omit()}}),
        "malformed": ("sk-too-short", {}),
        "unknown": (UNKNOWN_KEY, {}),
        "disabled": (disabled["key"], {}),
        "expired": (expired["key"], {}),
    }
    before = mock_requests(counted_mock)
    messages = {}
    for kind, (api_key, extra) in clients.items():
        with sdk(relay, api_key) as client:
            with pytest.raises(openai.AuthenticationError) as caught:
                create(client, stream, **extra)
        error = caught.value
        assert error.status_code == 401 and error.code == "invalid_api_key", (kind, error.body)
        assert error.request_id, kind
        messages[kind] = error.body["message"]
    assert len(set(messages.values())) == 5, messages
    assert disabled["masked_key"] in messages["disabled"] and "disabled" in messages["disabled"]
    assert expired["masked_key"] in messages["expired"] and "expired" in messages["expired"]
    assert disabled["key"] not in messages["disabled"] and expired["key"] not in messages["expired"]
    assert mock_requests(counted_mock) == before + 1, "a refused key must not reach the upstream"


@pytest.mark.parametrize("stream", [False, True])
def test_402_403_404_map_to_sdk_classes_before_any_upstream_call(relay, counted_mock, stream):
    _, empty_key, _ = customer(relay, "0")
    suspended_user, suspended_key, _ = customer(relay, "5.00")
    status, user = relay.admin("POST", f"/admin/users/{suspended_user}/suspend")
    assert status == 200 and user["status"] == "suspended", user
    _, capped_key, _ = customer(relay, "5.00", spend_cap="0.000001")
    allow_user, allowed_key, _ = customer(relay, "5.00", models=["other-demo"])

    before = mock_requests(counted_mock)
    messages = {}
    cases = [
        # kind, key, model, extra, expected class, status, code
        ("empty-inferred", empty_key, "ringway-demo", {}, openai.APIStatusError, 402, "insufficient_quota"),
        ("empty-explicit", empty_key, "ringway-demo", {"max_tokens": 5}, openai.APIStatusError, 402,
         "insufficient_quota"),
        ("suspended", suspended_key, "ringway-demo", {"max_tokens": 5}, openai.APIStatusError, 402,
         "wallet_suspended"),
        ("cap", capped_key, "ringway-demo", {"max_tokens": 5}, openai.APIStatusError, 402, "key_spend_cap_reached"),
        ("allowlist", allowed_key, "ringway-demo", {"max_tokens": 5}, openai.PermissionDeniedError, 403,
         "model_not_allowed"),
        ("unknown-model", allowed_key, "no-such-model", {"max_tokens": 5}, openai.NotFoundError, 404,
         "model_not_found"),
    ]
    for kind, api_key, model, extra, exception_class, status_code, code in cases:
        with sdk(relay, api_key) as client:
            with pytest.raises(openai.APIStatusError) as caught:
                create(client, stream, model=model, **extra)
        error = caught.value
        assert type(error) is exception_class, (kind, type(error))
        assert error.status_code == status_code and error.code == code, (kind, error.body)
        messages[kind] = error.body["message"]
    assert messages["empty-inferred"] == messages["empty-explicit"]
    assert len({messages[kind] for kind in ("empty-explicit", "suspended", "cap", "allowlist")}) == 4, messages
    assert "suspended" in messages["suspended"] and "cap" in messages["cap"]
    assert mock_requests(counted_mock) == before + 1, "refusals must not reach the upstream"

    # The allowed model works with the same key; the suspended wallet works again once resumed.
    with sdk(relay, allowed_key) as client:
        assert create(client, False, model="other-demo", max_tokens=5).choices[0].message.content == "tok0 tok1 "
    status, user = relay.admin("POST", f"/admin/users/{suspended_user}/resume")
    assert status == 200 and user["status"] == "active", user
    with sdk(relay, suspended_key) as client:
        assert create(client, stream, max_tokens=5)
    assert mock_requests(counted_mock) == before + 1 + 2 + 1
    # Nothing was charged for the refusals: no usage records for the refused users.
    assert usage_records(relay, allow_user) != [] and all(
        record["model"] == "other-demo" for record in usage_records(relay, allow_user))


# ---------------------------------------------------------------------------
# What is charged.


def test_exact_charge_for_a_per_call_model(relay):
    user_id, key, _ = customer(relay, "1.00")
    body = chat_bytes(model="percall-demo", max_tokens=6, mock="chunks=6")
    status, headers, data = post(relay, body, key)
    assert status == 200, data
    usage = json.loads(data)["usage"]
    received = len(body) - len("percall-demo") + len(UPSTREAM_MODEL)
    assert usage == {"prompt_tokens": mock_prompt_tokens(received), "completion_tokens": 6,
                     "total_tokens": mock_prompt_tokens(received) + 6}
    cost = cost_micros(PERCALL_PRICES, usage["prompt_tokens"], 6)
    assert cost == ceil_div(usage["prompt_tokens"] * 500_000 + 6 * 1_500_000, 1_000_000) + 10_000
    assert balance_of(relay, key) == 1_000_000 - cost
    [record] = usage_records(relay, user_id)
    assert record["request_id"] == headers["x-request-id"] and record["cost_micros"] == cost
    assert record["status"] == "completed" and record["model"] == "percall-demo" and record["upstream"] == "counted"
    assert user_of(relay, user_id)["balance_micros"] == 1_000_000 - cost


@pytest.mark.parametrize("stream", [False, True])
def test_usage_above_the_hold_is_capped_at_the_hold(relay, stream):
    """The mock ignores max_tokens and reports 60 completion tokens for max_tokens=2: the charge
    stops at the hold taken at admission, and the record says so."""
    user_id, key, _ = customer(relay, "1.00")
    body = chat_bytes(stream=stream, max_tokens=2, mock="chunks=60")
    hold = hold_micros(PRICES, len(body), 2)
    full_cost = cost_micros(PRICES, mock_prompt_tokens(upstream_size(body)), 60)
    assert full_cost > hold
    status, headers, data = post(relay, body, key)
    assert status == 200, data
    [record] = usage_records(relay, user_id)
    assert record["request_id"] == headers["x-request-id"]
    assert record["capped"] is True and record["cost_micros"] == hold, (record, hold, full_cost)
    assert record["completion_tokens"] == 60
    assert balance_of(relay, key) == 1_000_000 - hold
    assert user_of(relay, user_id)["balance_micros"] == 1_000_000 - hold


def test_embeddings_are_billed_for_their_prompt(relay):
    user_id, key, _ = customer(relay, "1.00")
    body = json.dumps({"model": "ringway-demo", "input": "embed these words please"},
                      separators=(",", ":")).encode()
    status, _, data = http_request(relay.url + "/v1/embeddings", "POST", body=body,
                                   headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    assert status == 200, data
    usage = json.loads(data)["usage"]
    assert usage["prompt_tokens"] == mock_prompt_tokens(upstream_size(body))
    cost = cost_micros(PRICES, usage["prompt_tokens"], 0)
    [record] = usage_records(relay, user_id)
    assert (record["prompt_tokens"], record["completion_tokens"], record["cost_micros"]) == \
        (usage["prompt_tokens"], 0, cost), record
    assert balance_of(relay, key) == 1_000_000 - cost


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("failure", ["status=500", "status=503", "status=429", "dead-upstream"])
def test_upstream_failure_before_any_output_costs_nothing(relay, stream, failure):
    user_id, key, _ = customer(relay, "1.00")
    model = "dead-demo" if failure == "dead-upstream" else "ringway-demo"
    mock = None if failure == "dead-upstream" else failure
    with sdk(relay, key) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            response = client.chat.completions.create(model=model, messages=MESSAGES, stream=stream, max_tokens=50,
                                                      extra_body={"mock": mock} if mock else None)
            if stream:
                list(response)
    assert caught.value.status_code == (429 if failure == "status=429" else 502), caught.value.body
    assert balance_of(relay, key) == 1_000_000
    user = user_of(relay, user_id)
    assert user["balance_micros"] == user["available_micros"] == 1_000_000
    # The attempt is recorded once, at zero cost and zero tokens. Only a completed response waits for
    # its record before its last bytes; an error's record is written right after the answer.
    deadline = time.monotonic() + 3
    while not (records := usage_records(relay, user_id)) and time.monotonic() < deadline:
        time.sleep(0.02)
    [record] = records
    assert (record["cost_micros"], record["prompt_tokens"], record["completion_tokens"]) == (0, 0, 0), record
    assert record["model"] == model and record["capped"] is False
    if failure != "status=429":  # an upstream refusal the client receives as it is
        assert record["status"] == "upstream_error", record


def test_max_tokens_inferred_from_a_small_wallet(relay):
    """A request without max_tokens gets the largest one the wallet pays for (echoed by the mock),
    and still succeeds; a wallet that cannot pay for one token gets 402."""
    body = chat_bytes(mock="echo=1;chunks=3")
    price = price_micros(PRICES)
    # A wallet that pays for the prompt bound and exactly 37 output tokens (plus change).
    balance = ceil_div(len(body) * max(price["input"], price["cached"]) + 37 * price["output"] + 5, 1_000_000)
    user_id, key, _ = customer(relay, f"0.{balance:06d}")
    expected = affordable_max_tokens(PRICES, balance, len(body))
    assert 3 <= expected < 4096, expected
    status, _, data = post(relay, body, key)
    assert status == 200, data
    document = json.loads(data)
    received = json.loads(document["choices"][0]["message"]["content"])
    assert received["max_tokens"] == expected, received
    assert received["model"] == UPSTREAM_MODEL
    usage = document["usage"]
    received_size = len(json.dumps(received, separators=(",", ":")).encode())
    assert usage["prompt_tokens"] == mock_prompt_tokens(received_size) and usage["completion_tokens"] == 3
    cost = cost_micros(PRICES, usage["prompt_tokens"], 3)
    assert balance_of(relay, key) == balance - cost
    [record] = usage_records(relay, user_id)
    assert record["cost_micros"] == cost and not record["capped"]
    # One token more than affordable would not have fitted: the answer is the largest.
    assert hold_micros(PRICES, len(body), expected) <= balance < hold_micros(PRICES, len(body), expected + 1)

    # A wallet too small for even one output token: 402, nothing charged.
    tiny = hold_micros(PRICES, len(body), 1) - 1
    _, tiny_key, _ = customer(relay, f"0.{tiny:06d}")
    status, _, data = post(relay, body, tiny_key)
    assert status == 402, data
    assert json.loads(data)["error"]["code"] == "insufficient_quota"
    assert balance_of(relay, tiny_key) == tiny


def test_client_disconnect_mid_stream_is_billed_once_for_the_full_usage(relay, counted_mock):
    user_id, key, _ = customer(relay, "1.00")
    chunks = 30
    body = chat_bytes(stream=True, max_tokens=64, mock=f"chunks={chunks};gap_ms=25")
    before = mock_requests(counted_mock)
    with RawConnection(relay.port) as connection:
        connection.send(raw_request("POST", "/v1/chat/completions", body, {"Authorization": f"Bearer {key}"}))
        head = connection.read_head()
        assert head.status == 200 and head.header("content-type").startswith("text/event-stream")
        request_id = head.header("x-request-id")
        seen = b""
        deadline = time.monotonic() + 10
        for piece in connection.iter_body(head):
            seen += piece
            if seen.count(b"tok") >= 2 or time.monotonic() > deadline:
                break
        assert b"tok1 " in seen and b"[DONE]" not in seen
        connection.close(reset=True)
    started = time.monotonic()

    def records():
        return usage_records(relay, user_id)

    deadline = time.monotonic() + 10
    while not records() and time.monotonic() < deadline:
        time.sleep(0.02)
    settled_after_s = time.monotonic() - started
    # The upstream's remaining ~27 chunks at 25 ms: the record can only come from a drained stream.
    assert settled_after_s > 0.3, settled_after_s
    time.sleep(0.3)
    found = records()
    assert len(found) == 1, found
    record = found[0]
    prompt = mock_prompt_tokens(upstream_size(body))
    assert record["request_id"] == request_id
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, chunks), record
    assert record["estimated"] is False and record["capped"] is False
    cost = cost_micros(PRICES, prompt, chunks)
    assert record["cost_micros"] == cost
    assert balance_of(relay, key) == 1_000_000 - cost
    user = user_of(relay, user_id)
    assert user["balance_micros"] == user["available_micros"] == 1_000_000 - cost
    assert mock_requests(counted_mock) == before + 2  # one upstream request, plus this stats call


def test_key_spend_cap_refuses_exactly_the_request_that_would_pass_it(relay):
    body = chat_bytes(max_tokens=20, mock="chunks=20")
    cost = cost_micros(PRICES, mock_prompt_tokens(upstream_size(body)), 20)
    hold = hold_micros(PRICES, len(body), 20)
    assert hold > cost
    cap = 3 * cost + hold - 1  # three requests fit; the fourth's hold does not (3 costs + hold > cap)
    user_id, key, created = customer(relay, "5.00", spend_cap=f"0.{cap:06d}")
    assert created["spend_cap_micros"] == cap
    for _ in range(3):
        status, _, data = post(relay, body, key)
        assert status == 200, data
    status, _, data = post(relay, body, key)
    assert status == 402, data
    assert json.loads(data)["error"]["code"] == "key_spend_cap_reached"
    # The wallet has plenty: another key of the same user still spends.
    status, other = relay.admin("POST", "/admin/keys", {"user_id": user_id})
    assert status == 201, other
    status, _, data = post(relay, body, other["key"])
    assert status == 200, data
    assert balance_of(relay, key) == 5_000_000 - 4 * cost
    # Raising the cap lets the first key spend again.
    status, patched = relay.admin("PATCH", f"/admin/keys/{created['id']}", {"spend_cap": f"0.{cap + 1:06d}"})
    assert status == 200, patched
    status, _, data = post(relay, body, key)
    assert status == 200, data
    records = usage_records(relay, user_id)
    assert len(records) == 5 and all(record["cost_micros"] == cost for record in records)
    assert user_of(relay, user_id)["balance_micros"] == 5_000_000 - 5 * cost


# ---------------------------------------------------------------------------
# Concurrency: many requests, one small wallet, two relay threads.

CONCURRENT_REQUESTS = 600


async def one_request(port, body, key, start_event, results):
    """One request on its own connection (Connection: close); appends (status, body) to results."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = raw_request("POST", "/v1/chat/completions", body,
                          {"Authorization": f"Bearer {key}", "Connection": "close"})
    try:
        await start_event.wait()
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(-1), timeout=30)
    finally:
        writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    results.append((status, head, payload, body))


async def burst(port, bodies, key):
    start_event = asyncio.Event()
    results = []
    tasks = [asyncio.ensure_future(one_request(port, body, key, start_event, results)) for body in bodies]
    await asyncio.sleep(0.2)  # let every connection open first
    start_event.set()
    await asyncio.gather(*tasks)
    return results


def test_concurrent_requests_never_overdraw_and_add_up_exactly(relay_factory, counted_mock):
    relay = relay_factory("billing-load", dict(billing_overrides(counted_mock, threads=2),
                                               limits={"upstream_connections_per_thread": 1024}))
    plain = chat_bytes(max_tokens=3, mock="chunks=3")
    streamed = chat_bytes(stream=True, max_tokens=3, mock="chunks=3")
    cost = {plain: cost_micros(PRICES, mock_prompt_tokens(upstream_size(plain)), 3),
            streamed: cost_micros(PRICES, mock_prompt_tokens(upstream_size(streamed)), 3)}
    hold = max(hold_micros(PRICES, len(plain), 3), hold_micros(PRICES, len(streamed), 3))
    start = 40 * cost[streamed] + 17  # affords about 40 of 600
    user_id, key, _ = customer(relay, f"0.{start:06d}")
    rng = random.Random(4)
    bodies = [rng.choice((plain, streamed)) for _ in range(CONCURRENT_REQUESTS)]

    observed = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            observed.append(balance_of(relay, key))
            time.sleep(0.005)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        results = asyncio.run(burst(relay.port, bodies, key))
    finally:
        stop.set()
        poller.join()

    statuses = [status for status, _, _, _ in results]
    assert len(results) == CONCURRENT_REQUESTS
    assert set(statuses) <= {200, 402}, sorted(set(statuses))
    succeeded = [body for status, _, _, body in results if status == 200]
    assert 0 < len(succeeded) < CONCURRENT_REQUESTS
    for status, head, payload, body in results:
        if status == 402:
            assert b"insufficient_quota" in payload, payload
        elif body is streamed:
            assert payload.rstrip().endswith(b"data: [DONE]") or b"data: [DONE]" in payload, payload[-200:]
    assert observed and min(observed) >= 0, min(observed)

    spent = sum(cost[body] for body in succeeded)
    final = balance_of(relay, key)
    assert final >= 0
    assert start - final == spent, (start, final, spent)
    records = usage_records(relay, user_id)
    assert len(records) == len(succeeded)
    assert sorted(record["cost_micros"] for record in records) == sorted(cost[body] for body in succeeded)
    assert sum(record["cost_micros"] for record in records) == start - final
    user = user_of(relay, user_id)
    assert user["balance_micros"] == user["available_micros"] == final

    # What is left is spent one request at a time until the wallet refuses: then less than a hold remains.
    while True:
        status, _, data = post(relay, plain, key)
        if status != 200:
            break
        succeeded.append(plain)
    assert status == 402, data
    final = balance_of(relay, key)
    assert 0 <= final < hold_micros(PRICES, len(plain), 3) <= hold
    records = usage_records(relay, user_id)
    assert len(records) == len(succeeded)
    assert sum(record["cost_micros"] for record in records) == start - final == sum(cost[b] for b in succeeded)
