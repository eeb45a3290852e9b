"""Self-service accounts end to end (issue 4): register -> login -> create a key -> stream with the
official openai SDK -> the balance and the usage list show the charge to the micro. Also every
refusal of the account endpoints: duplicate / invalid email, short password, wrong password,
the masked key listing, key deactivation (then 401 "disabled" on /v1), and session tokens (JWT)
missing, tampered with, signed with another algorithm or expired.

Money is checked exactly: the cost is recomputed here, with Python integers, from the usage the
mock reported (the client sees it because it asks for include_usage) and the model's prices:
    ceil((uncached_prompt × input + cached × cached_input + completion × output) / 1e6) + request_price
"""

import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request

import openai
import pytest

JWT_SECRET = "accounts-test-jwt-secret-0123456789abcdef"
FREE_GRANT = "0.50"
# Prices chosen so that the one rounding step (ceil of the micro-sum) matters.
PRICES = {"input_price": "1.234567", "cached_input_price": "0.617283", "output_price": "9.876543",
          "request_price": "0.000050"}
PASSWORD = "correct horse battery"


def money_micros(text):
    """'1.234567' -> 1234567, exactly (no floating point)."""
    units, _, fraction = text.partition(".")
    assert len(fraction) <= 6
    return int(units) * 1_000_000 + int((fraction + "000000")[:6])


def cost_micros(prices, prompt_tokens, completion_tokens, cached_tokens=0):
    """The ledger's cost rule in integers: one ceil over the micro-sum, plus the per-call price."""
    input_price = money_micros(prices.get("input_price", "0"))
    cached_price = money_micros(prices.get("cached_input_price", prices.get("input_price", "0")))
    output_price = money_micros(prices.get("output_price", "0"))
    request_price = money_micros(prices.get("request_price", "0"))
    exact = (prompt_tokens - cached_tokens) * input_price + cached_tokens * cached_price \
        + completion_tokens * output_price
    return -(-exact // 1_000_000) + request_price


def call(url, method="GET", body=None, token=None, raw=None):
    """One HTTP request; returns (status, headers, parsed JSON or raw bytes)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, response_headers, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, response_headers, payload = error.code, dict(error.headers), error.read()
    try:
        return status, response_headers, json.loads(payload)
    except ValueError:
        return status, response_headers, payload


def assert_error(status, document, expected_status, code=None):
    assert status == expected_status, document
    assert isinstance(document, dict) and set(document["error"]) == {"message", "type", "param", "code"}, document
    assert document["error"]["message"], document
    if code is not None:
        assert document["error"]["code"] == code, document
    return document["error"]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_jwt(header, payload, secret=JWT_SECRET):
    """An HS256 token over the given header and claims, as the relay would sign it."""
    signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64url(json.dumps(payload, separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


@pytest.fixture(scope="module")
def relay(relay_factory):
    """A relay of its own: a known JWT secret (to mint expired tokens), a free grant and priced ringway-demo."""
    return relay_factory("accounts", {"auth": {"jwt_secret": JWT_SECRET},
                                      "billing": {"free_grant": FREE_GRANT},
                                      "model ringway-demo": PRICES})


def register(relay, email, password=PASSWORD):
    return call(relay.url + "/auth/register", "POST", {"email": email, "password": password})


def login(relay, email, password=PASSWORD):
    return call(relay.url + "/auth/login", "POST", {"email": email, "password": password})


@pytest.fixture(scope="module")
def account(relay):
    """A registered account: (registration answer, session token from a login)."""
    status, _, registered = register(relay, "Flow@Example.com")
    assert status == 200, registered
    status, _, logged_in = login(relay, "flow@example.com")
    assert status == 200, logged_in
    return registered, logged_in["token"]


def stream_with_usage(relay, api_key, chunks):
    """Streams a chat completion through the SDK asking for usage; returns (request id, content, usage)."""
    with openai.OpenAI(base_url=relay.url + "/v1", api_key=api_key, max_retries=0, timeout=30) as sdk:
        stream = sdk.chat.completions.create(
            model="ringway-demo", messages=[{"role": "user", "content": "Count for me"}], stream=True,
            stream_options={"include_usage": True}, extra_body={"mock": f"chunks={chunks}"})
        request_id = stream.response.headers["x-request-id"]
        events = list(stream)
    content = "".join(choice.delta.content or "" for event in events for choice in event.choices)
    usage_events = [event for event in events if event.usage is not None]
    assert len(usage_events) == 1, events
    assert usage_events[0].choices == []
    return request_id, content, usage_events[0].usage


def wait_for_usage_record(relay, credential, request_id, timeout_s=3.0):
    """Waits until GET /billing/usage lists request_id. The SDK stops reading at data: [DONE]; the
    relay writes the usage record before the end of the chunked body, which may come a moment after
    [DONE] (see the report of issue 4's tests), so the record can trail the SDK by a few ms."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, _, listing = call(relay.url + "/billing/usage?limit=5", token=credential)
        assert status == 200, listing
        if request_id in {entry["request_id"] for entry in listing["data"]} or time.monotonic() > deadline:
            return
        time.sleep(0.005)


# ---------------------------------------------------------------------------
# The whole flow, money exact.


def test_register_login_key_stream_then_balance_and_usage_are_exact(relay, account):
    registered, token = account
    grant = money_micros(FREE_GRANT)
    assert registered["email"] == "flow@example.com"
    assert registered["balance"] == grant and registered["balance_display"] == "0.500000"
    assert registered["api_key"].startswith("sk-") and registered["token_type"] == "Bearer"

    status, _, created = call(relay.url + "/api-keys?name=streaming", "POST", token=token)
    assert status == 200, created
    assert created["name"] == "streaming" and created["status"] == "active" and created["key"].startswith("sk-")
    key = created["key"]

    request_id, content, usage = stream_with_usage(relay, key, chunks=5)
    assert content == "tok0 tok1 tok2 tok3 tok4 "
    assert usage.completion_tokens == 5 and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    cost = cost_micros(PRICES, usage.prompt_tokens, usage.completion_tokens)
    assert cost > money_micros(PRICES["request_price"])
    wait_for_usage_record(relay, token, request_id)

    # The balance, with the key and with the session token: exactly the grant minus the cost.
    for credential in (key, token, registered["api_key"]):
        status, _, balance = call(relay.url + "/billing/balance", token=credential)
        assert status == 200, balance
        assert balance["balance"] == grant - cost, (balance, cost)
        assert balance["user_id"] == registered["user_id"] and balance["status"] == "active"
        assert balance["email"] == "flow@example.com"
        assert money_micros(balance["balance_display"]) == grant - cost

    # The usage list: one record, the same cost and tokens, the same request id.
    status, _, listing = call(relay.url + "/billing/usage?limit=10", token=token)
    assert status == 200, listing
    assert listing["object"] == "list" and listing["has_more"] is False
    assert len(listing["data"]) == 1, listing
    record = listing["data"][0]
    assert record["model"] == "ringway-demo"
    assert record["request_id"] == request_id
    assert record["key_id"] == created["id"]
    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == \
        (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    assert record["cached_tokens"] == 0 and record["estimated"] is False and record["capped"] is False
    assert record["cost_micros"] == cost and money_micros(record["cost"]) == cost
    assert abs(record["created_ms"] - time.time() * 1000) < 60_000 and record["created"]

    # A second request, on the first key: the list is newest first and still adds up.
    second_id, _, second_usage = stream_with_usage(relay, registered["api_key"], chunks=2)
    second_cost = cost_micros(PRICES, second_usage.prompt_tokens, second_usage.completion_tokens)
    wait_for_usage_record(relay, token, second_id)
    status, _, listing = call(relay.url + "/billing/usage?limit=10", token=key)
    assert status == 200, listing
    assert [entry["request_id"] for entry in listing["data"]] == [second_id, request_id]
    assert [entry["cost_micros"] for entry in listing["data"]] == [second_cost, cost]
    assert listing["data"][0]["key_id"] == registered["api_key_id"]
    status, _, page = call(relay.url + "/billing/usage?limit=1", token=token)
    assert status == 200 and [entry["request_id"] for entry in page["data"]] == [second_id] and page["has_more"]
    status, _, balance = call(relay.url + "/billing/balance", token=token)
    assert balance["balance"] == grant - cost - second_cost

    # The admin's view agrees: settled balance == available (no hold left open) == grant - costs.
    status, user = relay.admin("GET", f"/admin/users/{registered['user_id']}")
    assert status == 200, user
    assert user["balance_micros"] == user["available_micros"] == grant - cost - second_cost


@pytest.mark.parametrize("limit", ["0", "1001", "x", "-1", ""])
def test_usage_limit_is_checked(relay, account, limit):
    _, token = account
    status, _, document = call(relay.url + f"/billing/usage?limit={limit}", token=token)
    assert_error(status, document, 400)


# ---------------------------------------------------------------------------
# Registration and login refusals.


def test_duplicate_email_is_409(relay, account):
    status, _, document = register(relay, "FLOW@example.COM", "another long password")
    assert_error(status, document, 409, "email_taken")


@pytest.mark.parametrize("email", ["not-an-email", "", "two@@example.com", "a@", "@example.com", "spa ce@example.com"])
def test_invalid_email_is_400(relay, email):
    status, _, document = register(relay, email)
    error = assert_error(status, document, 400, "invalid_email")
    assert error["param"] == "email"


@pytest.mark.parametrize("password", ["", "1234567", "short"])
def test_short_password_is_400(relay, password):
    status, _, document = register(relay, f"short{len(password)}@example.com", password)
    error = assert_error(status, document, 400, "invalid_password")
    assert error["param"] == "password"
    # Nothing was created: the same email registers fine with a good password.
    status, _, registered = register(relay, f"short{len(password)}@example.com")
    assert status == 200, registered


def test_password_of_exactly_8_characters_is_accepted(relay):
    status, _, registered = register(relay, "eight@example.com", "12345678")
    assert status == 200, registered
    status, _, logged_in = login(relay, "eight@example.com", "12345678")
    assert status == 200, logged_in


@pytest.mark.parametrize("body", [b"", b"[]", b"{\"email\": \"x@example.com\"", b"not json"],
                         ids=["empty", "array", "truncated", "not-json"])
def test_register_bad_json_is_400(relay, body):
    status, _, document = call(relay.url + "/auth/register", "POST", raw=body)
    assert_error(status, document, 400)


def test_wrong_password_is_401_like_an_unknown_email(relay, account):
    status, _, wrong = login(relay, "flow@example.com", "wrong password!")
    assert_error(status, wrong, 401, "invalid_credentials")
    status, _, unknown = login(relay, "nobody@example.com", "wrong password!")
    assert_error(status, unknown, 401, "invalid_credentials")
    assert wrong == unknown, "a wrong password must not tell whether the email exists"


def test_login_returns_a_working_token_and_the_balance(relay, account):
    registered, _ = account
    status, _, logged_in = login(relay, "FLOW@example.com")
    assert status == 200, logged_in
    assert logged_in["user_id"] == registered["user_id"] and logged_in["status"] == "active"
    status, _, balance = call(relay.url + "/billing/balance", token=logged_in["token"])
    assert status == 200 and balance["balance"] == logged_in["balance"]


@pytest.mark.parametrize("path", ["/auth/register", "/auth/login"])
def test_auth_endpoints_take_post_only(relay, path):
    status, _, document = call(relay.url + path)
    assert_error(status, document, 405)


# ---------------------------------------------------------------------------
# Keys: masked listing, deactivation.


def test_key_listing_is_masked(relay):
    status, _, registered = register(relay, "lister@example.com")
    assert status == 200, registered
    token = registered["token"]
    created = []
    for name in ("alpha", "beta%20two"):
        status, _, key = call(relay.url + f"/api-keys?name={name}", "POST", token=token)
        assert status == 200, key
        created.append(key)
    assert created[1]["name"] == "beta two"
    status, _, listing = call(relay.url + "/api-keys", token=token)
    assert status == 200, listing
    assert listing["object"] == "list"
    text = json.dumps(listing)
    full_keys = [registered["api_key"]] + [key["key"] for key in created]
    for full in full_keys:
        assert full not in text, "a listing must never show a whole key"
    entries = {entry["id"]: entry for entry in listing["data"]}
    assert set(entries) == {registered["api_key_id"]} | {key["id"] for key in created}
    for key in created:
        entry = entries[key["id"]]
        assert "key" not in entry
        assert entry["name"] == key["name"] and entry["status"] == "active"
        masked = entry["masked_key"]
        assert masked == key["masked_key"]
        # prefix...last 4: starts like the key, ends with its last four characters, hides the middle.
        shown_prefix, dots, last4 = masked.partition("...")
        assert dots and last4 == key["key"][-4:]
        assert shown_prefix.startswith("sk-") and key["key"].startswith(shown_prefix)
        assert len(shown_prefix) + len(last4) <= len(key["key"]) // 2
    assert entries[registered["api_key_id"]]["name"] == "default"


def test_deleted_key_is_refused_as_disabled(relay):
    status, _, registered = register(relay, "deleter@example.com")
    assert status == 200, registered
    token = registered["token"]
    status, _, created = call(relay.url + "/api-keys?name=doomed", "POST", token=token)
    assert status == 200, created
    with openai.OpenAI(base_url=relay.url + "/v1", api_key=created["key"], max_retries=0, timeout=30) as sdk:
        assert sdk.chat.completions.create(model="ringway-demo", messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=4, extra_body={"mock": "chunks=1"}).choices
        status, _, deleted = call(relay.url + f"/api-keys/{created['id']}", "DELETE", token=token)
        assert status == 200, deleted
        assert deleted == {"id": created["id"], "object": "api_key", "deleted": True, "status": "disabled"}
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk.chat.completions.create(model="ringway-demo", messages=[{"role": "user", "content": "hi"}],
                                        max_tokens=4)
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    message = caught.value.body["message"]
    assert "disabled" in message and created["masked_key"] in message and created["key"] not in message
    # Unknown keys get another message.
    with openai.OpenAI(base_url=relay.url + "/v1", api_key="sk-" + "Q" * 43, max_retries=0, timeout=30) as sdk:
        with pytest.raises(openai.AuthenticationError) as unknown:
            sdk.chat.completions.create(model="ringway-demo", messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.body["message"] != message and "disabled" not in unknown.value.body["message"]
    # The key stays listed, as disabled; the balance endpoint refuses it too; deleting again is idempotent.
    status, _, listing = call(relay.url + "/api-keys", token=token)
    assert {entry["id"]: entry["status"] for entry in listing["data"]}[created["id"]] == "disabled"
    status, _, document = call(relay.url + "/billing/balance", token=created["key"])
    assert "disabled" in assert_error(status, document, 401, "invalid_api_key")["message"]
    status, _, again = call(relay.url + f"/api-keys/{created['id']}", "DELETE", token=token)
    assert status == 200 and again["status"] == "disabled"
    # The other keys still work.
    status, _, balance = call(relay.url + "/billing/balance", token=registered["api_key"])
    assert status == 200, balance


@pytest.mark.parametrize("key_id", ["999999", "abc", "0", "-1"])
def test_delete_unknown_key_is_404(relay, account, key_id):
    _, token = account
    status, _, document = call(relay.url + f"/api-keys/{key_id}", "DELETE", token=token)
    assert_error(status, document, 404, "key_not_found")


def test_cannot_delete_another_users_key(relay, account):
    registered, _ = account
    status, _, other = register(relay, "neighbour@example.com")
    assert status == 200, other
    status, _, document = call(relay.url + f"/api-keys/{registered['api_key_id']}", "DELETE", token=other["token"])
    assert_error(status, document, 404, "key_not_found")
    status, _, balance = call(relay.url + "/billing/balance", token=registered["api_key"])
    assert status == 200, balance


# ---------------------------------------------------------------------------
# Session tokens (JWT).


def jwt_refusals(relay, account):
    """kind -> Authorization token (None: no header) that the JWT-only endpoints must refuse with 401."""
    registered, token = account
    header_part, payload_part, signature_part = token.split(".")
    claims = json.loads(b64url_decode(payload_part))
    assert claims["sub"] == str(registered["user_id"]) and claims["exp"] > time.time()
    now = int(time.time())
    richer = dict(claims, sub=str(registered["user_id"]), exp=now + 3600)
    flipped = signature_part[:-2] + ("A" if signature_part[-2] != "A" else "B") + signature_part[-1]
    return {
        "missing": None,
        "garbage": "not.a.jwt",
        "tampered-signature": f"{header_part}.{payload_part}.{flipped}",
        # Another user id in the claims, the original signature kept.
        "tampered-claims": f"{header_part}.{b64url(json.dumps(dict(claims, sub='1')).encode())}.{signature_part}",
        "wrong-secret": sign_jwt({"alg": "HS256", "typ": "JWT"}, richer, secret="x" * 40),
        "alg-none": b64url(b'{"alg":"none","typ":"JWT"}') + "." + b64url(json.dumps(richer).encode()) + ".",
        "alg-hs512": sign_jwt({"alg": "HS512", "typ": "JWT"}, richer),
        "expired": sign_jwt({"alg": "HS256", "typ": "JWT"}, dict(richer, iat=now - 7200, exp=now - 60)),
        "expires-now": sign_jwt({"alg": "HS256", "typ": "JWT"}, dict(richer, iat=now - 7200, exp=now)),
    }


@pytest.mark.parametrize("path,method", [("/api-keys", "GET"), ("/api-keys?name=x", "POST"),
                                         ("/api-keys/1", "DELETE"), ("/billing/usage", "GET"),
                                         ("/billing/balance", "GET")])
def test_bad_session_tokens_are_401(relay, account, path, method):
    messages = {}
    for kind, token in jwt_refusals(relay, account).items():
        status, _, document = call(relay.url + path, method, token=token)
        error = assert_error(status, document, 401)
        messages[kind] = error["message"]
    assert "expired" in messages["expired"].lower() and "expired" in messages["expires-now"].lower()
    for kind in ("tampered-signature", "tampered-claims", "wrong-secret", "alg-none", "alg-hs512", "garbage"):
        assert "expired" not in messages[kind].lower(), (kind, messages[kind])
    assert messages["missing"] != messages["expired"] != messages["tampered-signature"]


def test_a_token_signed_with_the_configured_secret_is_accepted(relay, account):
    """The control for the refusals above: the same construction with a future exp works."""
    registered, token = account
    claims = json.loads(b64url_decode(token.split(".")[1]))
    minted = sign_jwt({"alg": "HS256", "typ": "JWT"}, dict(claims, exp=int(time.time()) + 600))
    status, _, listing = call(relay.url + "/api-keys", token=minted)
    assert status == 200, listing
    assert registered["api_key_id"] in {entry["id"] for entry in listing["data"]}


def test_api_keys_endpoints_refuse_an_api_key(relay, account):
    registered, _ = account
    status, _, document = call(relay.url + "/api-keys", token=registered["api_key"])
    assert_error(status, document, 401)
