#!/usr/bin/env bash
# Installs redis-server, redis-cli and redis-benchmark with apt-get when any is missing (the
# RESP tests run redis-cli; bench-vs-redis.sh runs redis-server and redis-benchmark).
set -euo pipefail
if command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
    && command -v redis-benchmark >/dev/null; then
    exit 0
fi
echo "== installing redis-server and redis-tools (apt-get)" >&2
sudo_cmd=""
[ "$(id -u)" = 0 ] || sudo_cmd="sudo"
$sudo_cmd apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server redis-tools >&2
