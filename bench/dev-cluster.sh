#!/usr/bin/env bash
# dev-cluster.sh BIN N [bench flags...]: start a fresh `BIN dev` stack
# (TiKV test cluster and broker in one process, redis-server) and N nodes
# on it (HTTP 127.0.0.1:9111.., operations 127.0.0.1:9311.., cluster
# 127.0.0.1:9211..), wait until every
# node is ready, run BIN bench against all of them with the flags given,
# print the CPU seconds each process used from the bench's start to its
# end (nodes, the dev process, redis-server), then stop everything and
# remove the data. The nodes serve the demo activity under keys made for
# the run. For three nodes against one, alternate N=3 and N=1.
set -euo pipefail
bin=$1 n=$2
shift 2
dir=$(mktemp -d)
pids=()
cleanup() {
	# The nodes first, while their backends still answer, then the stack.
	for p in "${pids[@]:1}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]:1}"; do wait "$p" 2>/dev/null || true; done
	[ "${#pids[@]}" -gt 0 ] && { kill "${pids[0]}" 2>/dev/null || true; wait "${pids[0]}" 2>/dev/null || true; }
	rm -rf "$dir"
}
trap cleanup EXIT
"$bin" dev --data-dir "$dir/dev" >"$dir/dev.flags" 2>"$dir/dev.log" &
dev=$!
pids+=("$dev")
for _ in $(seq 1 120); do [ -s "$dir/dev.flags" ] && break; sleep 0.5; done
flags=$(head -1 "$dir/dev.flags")
[ -n "$flags" ] || { echo "dev stack did not start:" >&2; tail -20 "$dir/dev.log" >&2; exit 1; }
# Nodes on real backends refuse public keys: the demo activity with keys
# of this run's own; the bench signs its admin calls with the admin key
# and its grants with app 1's key.
REDRAIN_ADMIN_KEY=$("$bin" keygen --id bench)
REDRAIN_APP_KEY=$("$bin" keygen --id 1)
export REDRAIN_ADMIN_KEY REDRAIN_APP_KEY
cat >"$dir/campaign.json" <<JSON
{"activities": [{"id": "demo", "rains": [{"scene_id": "rain", "rain_id": 1, "always_open": true, "start": "2026-01-01T00:00:00Z"}],
  "awards": [{"type": "cash", "kind": "money", "min": 1, "max": 200}],
  "stages": [{"stage": "formal", "budgets": {"cash": 1000000000000}}]}],
 "token_keys": ["$("$bin" keygen --id 1)"], "active_token_key": 1, "draw_salt": "demo",
 "admin_keys": ["$REDRAIN_ADMIN_KEY"], "app_keys": ["$REDRAIN_APP_KEY"]}
JSON
targets=()
admins=()
for i in $(seq 1 "$n"); do
	seeds=()
	for j in $(seq 1 "$n"); do [ "$j" = "$i" ] || seeds+=("127.0.0.1:92$((10 + j))"); done
	seedflag=()
	[ "${#seeds[@]}" -gt 0 ] && seedflag=(--cluster-seeds "$(IFS=,; echo "${seeds[*]}")")
	# shellcheck disable=SC2086
	"$bin" serve $flags --config "$dir/campaign.json" --data-dir "$dir/n$i" --http "127.0.0.1:91$((10 + i))" \
		--admin-http "127.0.0.1:93$((10 + i))" \
		--cluster-addr "127.0.0.1:92$((10 + i))" "${seedflag[@]}" >"$dir/n$i.log" 2>&1 &
	pids+=("$!")
	targets+=("http://127.0.0.1:91$((10 + i))")
	admins+=("http://127.0.0.1:93$((10 + i))")
done
for i in $(seq 1 "$n"); do
	for _ in $(seq 1 240); do
		curl -fs "127.0.0.1:91$((10 + i))/readyz" | grep -q '"ready"' && break
		sleep 0.5
	done
	curl -fs "127.0.0.1:91$((10 + i))/readyz" | grep -q '"ready"' || { echo "node $i not ready after 120 s:" >&2; tail -20 "$dir/n$i.log" >&2; exit 1; }
done
redis=$(pgrep -f "redis-server.*$(echo "$flags" | sed 's/.*--redis=[^:]*:\([0-9]*\).*/\1/')" | head -1 || true)
cpu() { # seconds of CPU of pid $1 so far
	awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}
snapshot() {
	local out=()
	for p in "${pids[@]}" $redis; do out+=("$(cpu "$p")"); done
	echo "${out[@]}"
}
before=($(snapshot))
"$bin" bench --target "$(IFS=,; echo "${targets[*]}")" --admin-target "$(IFS=,; echo "${admins[*]}")" "$@"
after=($(snapshot))
names=(dev)
for i in $(seq 1 "$n"); do names+=("node$i"); done
[ -n "$redis" ] && names+=(redis-server)
total_nodes=0
for k in "${!names[@]}"; do
	used=$(awk -v a="${after[$k]}" -v b="${before[$k]}" 'BEGIN { printf "%.2f", a - b }')
	echo "cpu ${names[$k]} ${used}s"
	case ${names[$k]} in node*) total_nodes=$(awk -v t="$total_nodes" -v u="$used" 'BEGIN { print t + u }') ;; esac
done
echo "cpu nodes ${total_nodes}s"
