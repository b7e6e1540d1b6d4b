#!/usr/bin/env bash
# Runs seeds 1..N of the simulation in two processes (the simulation runs
# on one processor per process, so that a seed replays exactly) and
# reports every failing seed with the command that replays it.
# Usage: sim/seeds.sh N [go binary]
set -euo pipefail
n=${1:?usage: sim/seeds.sh SEEDS}
go=${2:-go}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$go" test -c -o "$tmp/sim.test" ./sim/
half=$(( (n + 1) / 2 ))
start=$(date +%s)
"$tmp/sim.test" -test.run TestSimulation -test.timeout 30m -sim.first=1 -sim.seeds=$half > "$tmp/a.log" 2>&1 & a=$!
rb=0
if (( n > half )); then
	"$tmp/sim.test" -test.run TestSimulation -test.timeout 30m -sim.first=$(( half + 1 )) -sim.seeds=$(( n - half )) > "$tmp/b.log" 2>&1 || rb=$?
else
	echo PASS > "$tmp/b.log"
fi
ra=0
wait $a || ra=$?
if (( ra != 0 || rb != 0 )); then
	grep -hv '^time=' "$tmp/a.log" "$tmp/b.log" | grep -v '^=== ' | head -200
	echo "simulation: failures among seeds 1-$n (see above)"
	exit 1
fi
echo "simulation: $n seeds passed in $(( $(date +%s) - start ))s"
