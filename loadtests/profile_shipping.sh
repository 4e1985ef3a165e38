#!/usr/bin/env bash
# What shipping costs one edge worker: the edge on CPU 1 shipping to the stand-in collector
# (loadtests/baselines.py standin) on CPU 0 at nice 19, wrk (64 connections, 50,000 tokens) on CPU 0 for 22 s.
#
#   loadtests/profile_shipping.sh shipping     # the edge ships as it runs
#   loadtests/profile_shipping.sh paused       # the stand-in is stopped (SIGSTOP) for the run: no shipping
#
# ROOT=<checkout> runs the edge from another checkout (to compare with older code; the stand-in and the tokens
# always come from this one). SPY=1 also samples the worker with py-spy (pip install py-spy) for 12 s into
# DIR/spy-MODE.txt; `python -m loadtests.spy_categories DIR/spy-*.txt` sums the samples by part.
# Scratch files go to DIR (default /tmp/clickedge-profile). Loopback only.
set -euo pipefail
MODE=${1:?usage: profile_shipping.sh shipping|paused}
HERE=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${ROOT:-$HERE}
DIR=${DIR:-/tmp/clickedge-profile}
PY=$HERE/.venv/bin/python
EDGE_PORT=${EDGE_PORT:-39080}
STANDIN_PORT=${STANDIN_PORT:-39003}
export CLICKEDGE_INGEST_SECRET=profile-secret
mkdir -p "$DIR"
if [ ! -s "$DIR/tokens.txt" ]; then
    (cd "$HERE" && $PY -m clickedge keys --data-dir "$DIR/data" create >/dev/null)
    (cd "$HERE" && $PY loadtests/make_tokens.py --data-dir "$DIR/data" --count 50000 >"$DIR/tokens.txt")
fi
(cd "$HERE" && exec taskset -c 0 nice -n 19 $PY -m loadtests.baselines standin --port "$STANDIN_PORT") \
    >"$DIR/standin.log" 2>&1 &
STANDIN=$!
(cd "$ROOT" && exec taskset -c 1 $PY -m clickedge edge --data-dir "$DIR/data" --edge-port "$EDGE_PORT" \
    --collector-url "http://127.0.0.1:$STANDIN_PORT" --spool-dir "$DIR/spool-$MODE-$$" --workers 1 \
    --trusted-proxies 10.0.0.0/8 --drain-grace 0) >"$DIR/edge-$MODE.log" 2>&1 &
EDGE=$!
trap 'kill -CONT $STANDIN 2>/dev/null; kill $EDGE $STANDIN 2>/dev/null; wait; rm -rf "$DIR/spool-$MODE-$$"' EXIT
until curl -sf "http://127.0.0.1:$EDGE_PORT/readyz" >/dev/null; do sleep 0.2; done  # a starting edge
WORKER=$(pgrep -P $EDGE | head -1 || true)
if [ "$MODE" = paused ]; then kill -STOP $STANDIN; fi
taskset -c 0 wrk -t1 -c64 -d22s -s "$HERE/loadtests/clicks.lua" "http://127.0.0.1:$EDGE_PORT" -- "$DIR/tokens.txt" \
    >"$DIR/wrk-$MODE.txt" &
WRK=$!
if [ -n "${SPY:-}" ]; then
    sleep 5  # into the run, past wrk's connection set-up
    "$HERE/.venv/bin/py-spy" record --idle --threads --rate 400 --duration 12 --format raw \
        -o "$DIR/spy-$MODE.txt" --pid "${WORKER:-$EDGE}" --nonblocking >/dev/null 2>&1
fi
wait $WRK
grep -E "Requests/sec|Latency" "$DIR/wrk-$MODE.txt"
