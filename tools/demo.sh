#!/usr/bin/env bash
# The demo behind `tools/zig build run`: the mock upstream with TLS on
# 127.0.0.1:9443, then the relay in the foreground with conf/ringway.conf.
#
#   bash tools/demo.sh PATH/TO/ringway PATH/TO/ringway-mock PATH/TO/ringctl [ringway args...]
#
# Run from the repository root. On first use it makes a throwaway CA and a
# server certificate for 127.0.0.1/localhost in data/certs (git-ignored; the
# private keys are mode 600); conf/ringway.conf trusts data/certs/ca.pem. The
# mock's log goes to data/mock.log. When the relay exits (Ctrl-C), the mock is
# stopped by its PID.
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: bash tools/demo.sh RINGWAY RINGWAY_MOCK RINGCTL [ringway arguments...]" >&2
    exit 2
fi
ringway=$1
mock=$2
ringctl=$3
shift 3
key_file=data/demo-key

config=conf/ringway.conf
certs=data/certs
mock_listen=127.0.0.1:9443
mock_log=data/mock.log

if [ ! -f "$config" ]; then
    echo "demo: $config not found; run from the repository root" >&2
    exit 1
fi

make_certificates() {
    if ! command -v openssl >/dev/null; then
        echo "demo: openssl is needed to make the demo certificates" >&2
        exit 1
    fi
    echo "demo: making a throwaway CA and a server certificate in $certs"
    mkdir -p "$certs"
    chmod 700 "$certs"
    local scratch
    scratch=$(mktemp -d)
    (
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 825 \
            -keyout "$scratch/ca.key" -out "$scratch/ca.pem" -subj "/CN=Ringway Demo CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$scratch/server.key" \
            -out "$scratch/server.csr" -subj "/CN=localhost" 2>/dev/null
        printf '%s\n' "basicConstraints=CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" \
            "subjectAltName=IP:127.0.0.1,DNS:localhost" > "$scratch/server.ext"
        openssl x509 -req -in "$scratch/server.csr" -CA "$scratch/ca.pem" -CAkey "$scratch/ca.key" \
            -CAcreateserial -sha256 -days 825 -extfile "$scratch/server.ext" \
            -out "$scratch/server.pem" 2>/dev/null
    )
    # Move the finished set into place last, so an interrupted run never
    # leaves a key without its certificate.
    mv "$scratch/ca.key" "$scratch/server.key" "$certs/"
    mv "$scratch/ca.pem" "$scratch/server.pem" "$certs/"
    chmod 600 "$certs/ca.key" "$certs/server.key"
    chmod 644 "$certs/ca.pem" "$certs/server.pem"
    rm -rf "$scratch"
}

for file in ca.pem ca.key server.pem server.key; do
    if [ ! -s "$certs/$file" ]; then
        make_certificates
        break
    fi
done

# The key the relay sends upstream: api_key in the [upstream mock] section.
mock_api_key=$(awk '
    /^[[:space:]]*\[/ { in_mock = ($0 ~ /^[[:space:]]*\[upstream[[:space:]]+mock\][[:space:]]*$/) }
    in_mock && /^[[:space:]]*api_key[[:space:]]*=/ {
        sub(/^[^=]*=[[:space:]]*/, ""); sub(/[[:space:]]+#.*$/, ""); sub(/[[:space:]]+$/, "")
        print; exit
    }' "$config")

mock_args=(--listen "$mock_listen" --tls-cert "$certs/server.pem" --tls-key "$certs/server.key")
if [ -n "$mock_api_key" ]; then
    mock_args+=(--api-key "$mock_api_key")
fi

mkdir -p data
"$mock" "${mock_args[@]}" >"$mock_log" 2>&1 &
mock_pid=$!

stop_mock() {
    if kill -0 "$mock_pid" 2>/dev/null; then
        kill -TERM "$mock_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$mock_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$mock_pid" 2>/dev/null || true
    fi
    wait "$mock_pid" 2>/dev/null || true
}
trap stop_mock EXIT
# Ctrl-C reaches the relay too (same process group) and it exits cleanly;
# the script then ends with the relay's status. Before the relay runs, an
# interrupt ends the script at the next check.
interrupted=no
trap 'interrupted=yes' INT TERM

ready=no
for _ in $(seq 1 100); do
    if [ "$interrupted" = yes ]; then
        exit 130
    fi
    if ! kill -0 "$mock_pid" 2>/dev/null; then
        break
    fi
    if curl -sS --noproxy '*' -m 1 --cacert "$certs/ca.pem" -o /dev/null "https://$mock_listen/healthz" 2>/dev/null; then
        ready=yes
        break
    fi
    sleep 0.1
done
if [ "$ready" != yes ]; then
    echo "demo: the mock upstream did not come up on $mock_listen; its log ($mock_log):" >&2
    tail -n 20 "$mock_log" >&2 || true
    exit 1
fi

# The relay, in the background until it is ready and the demo has a key.
"$ringway" --config "$config" "$@" &
relay_pid=$!
stop_all() {
    if kill -0 "$relay_pid" 2>/dev/null; then
        kill -TERM "$relay_pid" 2>/dev/null || true
        wait "$relay_pid" 2>/dev/null || true
    fi
    stop_mock
}
trap stop_all EXIT

ready=no
for _ in $(seq 1 100); do
    if [ "$interrupted" = yes ] || ! kill -0 "$relay_pid" 2>/dev/null; then
        break
    fi
    if curl -sS --noproxy '*' -m 1 -o /dev/null "http://127.0.0.1:8080/healthz" 2>/dev/null; then
        ready=yes
        break
    fi
    sleep 0.1
done
if [ "$ready" != yes ]; then
    echo "demo: the relay did not come up on 127.0.0.1:8080" >&2
    exit 1
fi

# A key for the demo: made once with ringctl for the admin account (user 1,
# created by the relay on its first start) and kept in data/demo-key.
key=""
if [ -s "$key_file" ]; then
    key=$(cat "$key_file")
    code=$(curl -sS --noproxy '*' -m 2 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" \
        "http://127.0.0.1:8080/billing/balance" 2>/dev/null || true)
    [ "$code" = 200 ] || key=""
fi
if [ -z "$key" ]; then
    if json=$("$ringctl" --config "$config" --json keys create --user 1 --name demo); then
        key=$(printf '%s' "$json" | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
        (umask 077; printf '%s\n' "$key" > "$key_file")
    else
        echo "demo: could not make a key with ringctl (see above)" >&2
    fi
fi

cat <<BANNER

  Ringway demo
  mock upstream : https://$mock_listen (log: $mock_log)
  relay         : http://127.0.0.1:8080 ($config)
  admin API     : http://127.0.0.1:8081 (zig-out/bin/ringctl --config $config ...)

  Your demo API key (kept in $key_file):

    export RINGWAY_KEY=$key

  Try, in another terminal:

    curl -sS http://127.0.0.1:8080/v1/chat/completions \\
      -H 'Content-Type: application/json' -H "Authorization: Bearer \$RINGWAY_KEY" \\
      -d '{"model":"ringway-demo","messages":[{"role":"user","content":"Hello"}]}'

    curl -sS -N http://127.0.0.1:8080/v1/chat/completions \\
      -H 'Content-Type: application/json' -H "Authorization: Bearer \$RINGWAY_KEY" \\
      -d '{"model":"ringway-demo","stream":true,"messages":[{"role":"user","content":"Hello"}]}'

  Ctrl-C stops the relay and the mock.

BANNER

status=0
wait "$relay_pid" || status=$?
exit "$status"
