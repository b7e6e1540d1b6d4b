#!/usr/bin/env bash
# Three redrain nodes with etcd membership, on one machine, no containers:
# a three-member etcd cluster on loopback, the shared backends from
# `redrain dev` (Kafka-protocol broker, Redis, TiKV-protocol development
# server; not for production), and three `redrain serve` that find each
# other through etcd alone. Ctrl-C stops everything.
#
#   make build && deploy/etcd/three-nodes.sh [dir]     (default /tmp/redrain-etcd)
#
# Needs etcd (Debian: apt-get install etcd-server) and curl. In production
# the same `serve` flags point at real Kafka, PD, Redis and etcd endpoints
# (see redrain@.service next to this file).
set -euo pipefail

dir=${1:-/tmp/redrain-etcd}
bin=${REDRAIN:-bin/redrain}
command -v etcd >/dev/null || { echo "etcd not found: apt-get install etcd-server" >&2; exit 1; }
[ -x "$bin" ] || { echo "$bin not found: run make build (or set REDRAIN)" >&2; exit 1; }
mkdir -p "$dir"

pids=()
stop() {
	# serve leaves the cluster on SIGTERM; etcd goes last so that it can.
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill "${pids[i]}" 2>/dev/null || true
		wait "${pids[i]}" 2>/dev/null || true
	done
}
trap stop EXIT
trap 'exit 130' INT TERM

# waitfor DESC SECONDS COMMAND...: polls COMMAND every 0.2 s until it
# succeeds, or gives up after SECONDS.
waitfor() {
	local what=$1 secs=$2 start=$SECONDS
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS - start > secs)); then
			echo "no $what after ${secs}s; logs in $dir" >&2
			exit 1
		fi
		sleep 0.2
	done
}

# etcd: client ports 23791-23793, peer ports 23801-23803 (below Linux's
# ephemeral range, so no outgoing connection holds them).
cluster=e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803
endpoints=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793
for i in 1 2 3; do
	etcd --name "e$i" --data-dir "$dir/etcd$i" \
		--listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
		--listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
		--initial-cluster "$cluster" --initial-cluster-token redrain-example --initial-cluster-state new \
		>"$dir/etcd$i.log" 2>&1 &
	pids+=($!)
done
for i in 1 2 3; do
	waitfor "healthy etcd e$i" 30 curl -fsS "http://127.0.0.1:2379$i/health"
done
echo "etcd: $endpoints"

# The shared backends; dev prints the serve flags that point at them.
"$bin" dev --data-dir "$dir/dev" >"$dir/dev.flags" 2>"$dir/dev.log" &
pids+=($!)
waitfor "backends" 120 test -s "$dir/dev.flags"
flags=$(cat "$dir/dev.flags")
echo "backends: $flags"

# Nodes on real backends refuse public keys: a campaign file (the demo
# activity) with keys made for this directory, kept across runs; the
# admin key signs `redrain admin` and bench through $REDRAIN_ADMIN_KEY,
# app 1's key the bench's grants through $REDRAIN_APP_KEY.
if [ ! -s "$dir/campaign.json" ]; then
	cat >"$dir/campaign.json" <<JSON
{"activities": [{"id": "demo", "rains": [{"scene_id": "rain", "rain_id": 1, "always_open": true, "start": "2026-01-01T00:00:00Z"}],
  "awards": [{"type": "cash", "kind": "money", "min": 1, "max": 200}],
  "stages": [{"stage": "formal", "budgets": {"cash": 1000000000000}}]}],
 "token_keys": ["$("$bin" keygen --id 1)"], "active_token_key": 1, "draw_salt": "demo",
 "admin_keys": ["$("$bin" keygen --id ops)"], "app_keys": ["$("$bin" keygen --id 1)"]}
JSON
	chmod 600 "$dir/campaign.json"
fi
REDRAIN_ADMIN_KEY=$(sed -n 's/.*"admin_keys": \["\([^"]*\)".*/\1/p' "$dir/campaign.json")
REDRAIN_APP_KEY=$(sed -n 's/.*"app_keys": \["\([^"]*\)".*/\1/p' "$dir/campaign.json")
if [ -z "$REDRAIN_APP_KEY" ]; then
	echo "$dir/campaign.json has no app_keys (made by an older version): remove it to have it made again" >&2
	exit 1
fi
export REDRAIN_ADMIN_KEY REDRAIN_APP_KEY

# Three nodes. With --cluster-etcd, --cluster-addr is the remoting address
# each node registers in etcd for the others to dial. The first starts
# alone: nodes started together on a fresh store race to create the
# campaign's budgets and the loser exits with a write conflict.
serve() {
	# shellcheck disable=SC2086 # $flags is several flags
	"$bin" serve $flags --config "$dir/campaign.json" --data-dir "$dir/n$1" --http "127.0.0.1:910$1" \
		--admin-http "127.0.0.1:930$1" \
		--cluster-addr "127.0.0.1:920$1" --cluster-etcd "$endpoints" \
		>"$dir/n$1.log" 2>&1 &
	pids+=($!)
}
serve 1
waitfor "ready node n1" 180 curl -fsS http://127.0.0.1:9101/readyz
serve 2
serve 3
for i in 2 3; do
	waitfor "ready node n$i" 180 curl -fsS "http://127.0.0.1:910$i/readyz"
done

echo "nodes: http://127.0.0.1:9101 http://127.0.0.1:9102 http://127.0.0.1:9103 (operations: 9301-9303)"
echo "members as node n1 sees them:"
# Admin requests are signed with $REDRAIN_ADMIN_KEY (set above).
"$bin" admin --target http://127.0.0.1:9301 cluster | grep -o '"id": "[^"]*@[^"]*"' || true
echo "admin key (for $bin admin and bench): export REDRAIN_ADMIN_KEY=$REDRAIN_ADMIN_KEY"
echo "app 1's key (for bench and $bin sign): export REDRAIN_APP_KEY=$REDRAIN_APP_KEY"
echo "try: $bin bench --target http://127.0.0.1:9101,http://127.0.0.1:9102,http://127.0.0.1:9103 --admin-target http://127.0.0.1:9301,http://127.0.0.1:9302,http://127.0.0.1:9303 --users 100000"
echo "Ctrl-C stops everything (logs and data stay in $dir)."
wait
