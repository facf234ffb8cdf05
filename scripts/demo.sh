#!/usr/bin/env bash
# The README's demo: four orders down four paths of the saga, against a running system
# (`./dev up`). Needs curl and python3. URLs can be overridden for a system elsewhere.
# Every call carries a bearer token: a customer's, minted with `sagactl token` from the
# AUTH_JWT_SECRET that ./dev keeps in .env (read here for what the environment lacks), and
# the provider's merchant key (PAYMENTS_PROVIDER_API_KEY) for its ledger.
set -euo pipefail
if [ -f .env ]; then
    while IFS='=' read -r name value; do
        [[ $name =~ ^[A-Z_][A-Z0-9_]*$ ]] && [ -z "${!name+x}" ] && export "$name=$value"
    done < .env
fi
ORDERS_URL="${ORDERS_URL:-http://127.0.0.1:8000}"
STOCK_URL="${STOCK_URL:-http://127.0.0.1:8001}"
PROVIDER_URL="${PROVIDER_URL:-http://127.0.0.1:8010}"
PY="${PYTHON:-python3}"
SAGACTL="${SAGACTL:-./dev}"
TOKEN="$($SAGACTL token --customer c-42)"
AUTH=(-H "Authorization: Bearer $TOKEN")

json() { "$PY" -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {'d': d}))" "$1"; }

order() { # order SKU QTY CARD_TOKEN -> order id
    curl -sf -X POST "$ORDERS_URL/orders" "${AUTH[@]}" -H 'Content-Type: application/json' -d "{
        \"customer_id\": \"c-42\", \"email\": \"ada@example.com\",
        \"items\": [{\"sku\": \"$1\", \"quantity\": $2}],
        \"payment\": {\"card_token\": \"$3\"},
        \"shipping_address\": {\"name\": \"Ada Lovelace\", \"line1\": \"12 St James Sq\",
            \"city\": \"London\", \"postal_code\": \"SW1Y 4JH\", \"country\": \"GB\"}}" \
        | json "d['order_id']"
}

status() { curl -sf "${AUTH[@]}" "$ORDERS_URL/orders/$1" | json "d['status']"; }

wait_for() { # wait_for ID STATUS... (up to 30 s)
    local id=$1; shift
    for _ in $(seq 150); do
        for wanted in "$@"; do [ "$(status "$id")" = "$wanted" ] && return 0; done
        sleep 0.2
    done
    echo "order $id did not reach $*" >&2; return 1
}

show() {
    curl -sf "${AUTH[@]}" "$ORDERS_URL/orders/$1" | json "{k: d[k] for k in ('status', 'reason_code', 'reason', 'total_cents')} | {'timeline': [t['producer'] + '/' + t['event_type'] for t in d['timeline']]}"
}

echo "# happy order"
id=$(order KEYB-01 1 tok_visa); wait_for "$id" SHIPPED CANCELLED; show "$id"
echo "# out of stock"
id=$(order LAMP-01 5 tok_visa); wait_for "$id" SHIPPED CANCELLED; show "$id"
echo "# declined card"
id=$(order MON-27 1 tok_decline); wait_for "$id" SHIPPED CANCELLED; show "$id"
echo "# cancelled by the customer after payment"
id=$(order HEAD-01 1 tok_visa); wait_for "$id" APPROVED
curl -sf -X POST "${AUTH[@]}" "$ORDERS_URL/orders/$id/cancel" | json "d['status']"
sleep 3; wait_for "$id" CANCELLED; show "$id"
echo "# HEAD-01 stock"
curl -sf "$STOCK_URL/stock/HEAD-01" | json "d"
echo "# provider ledger"
curl -sf -H "Authorization: Bearer $PAYMENTS_PROVIDER_API_KEY" "$PROVIDER_URL/ledger" | json "'\n'.join(str({k: c[k] for k in ('order_id', 'status', 'amount_cents', 'refund_id')}) for c in d['charges'])"
