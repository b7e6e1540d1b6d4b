#!/usr/bin/env bash
# fresh-node.sh BIN PORT [bench flags...]: start a fresh node from BIN on
# 127.0.0.1:PORT (its own temporary data dir, embedded backends), wait for
# /readyz, run BIN bench against it with the flags given, then stop the
# node and remove its data. For side-by-side runs of two binaries:
#   for v in a b a b; do bench/fresh-node.sh /tmp/redrain.$v 18801 --rate 5000 --batch 100 --duration 20s --users 300000; done
set -euo pipefail
bin=$1 port=$2
shift 2
dir=$(mktemp -d)
"$bin" serve --data-dir "$dir" --http "127.0.0.1:$port" >"$dir/node.log" 2>&1 &
pid=$!
# At exit: the node's peak memory and its CPU over its whole life (start,
# run, drain, audit and whatever the store did meanwhile).
life_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f s", ($14+$15)/hz}' "/proc/$pid/stat" 2>/dev/null; }
trap 'echo "node peak memory: $(grep -s VmHWM /proc/$pid/status); node cpu over its life: $(life_cpu)" >&2; kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 120); do
	curl -fs "127.0.0.1:$port/readyz" | grep -q '"ready"' && break
	sleep 0.5
done
curl -fs "127.0.0.1:$port/readyz" | grep -q '"ready"' || { echo "node not ready after 60 s; its log:" >&2; tail -20 "$dir/node.log" >&2; exit 1; }
"$bin" bench --target "http://127.0.0.1:$port" "$@"
