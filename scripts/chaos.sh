#!/usr/bin/env bash
# Runs a cluster of member processes under load with random faults and prints a summary:
#   scripts/chaos.sh [SECONDS] [corecast chaos flags…]
#
# `corecast chaos` starts `--members` (3) member processes with backup-count 1, drives them from
# `--clients` (6) threads of one smart client (AtomicLong add/get/compare-and-set, Map
# put/get/remove on a few keys, Lock try/unlock/info, and unique ledger keys), and meanwhile
# kills (`kill -9`, then a new member in its place) and pauses (SIGSTOP for up to
# `--max-pause-millis`, then SIGCONT) one member at a time, waiting for the cluster to be whole
# again before the next fault. At the end it reads every object back, checks the history for
# linearizability, counts acknowledged ledger writes that are gone, and exits non-zero if either
# check fails. Logs, `history.jsonl` and `summary.txt` go to `--out` (target/chaos).
# `corecast chaos --help` lists every flag; `--seed N` replays a run's workload and fault
# schedule (timings still vary).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}
shift || true
cargo build --release -q -p corecast-services --bin corecast
exec target/release/corecast chaos --duration-secs "$seconds" "$@"
