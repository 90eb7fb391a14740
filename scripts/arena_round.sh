#!/usr/bin/env bash
# The arena round of docs/results.md on one GPU: every entrant of issue 21 at two budgets, at the `arena` preset.
#
#   bash scripts/arena_round.sh all      # the corpus from .cache/corpus.tar.xz, then the three steps below
#   bash scripts/arena_round.sh more     # a second lease, on a fresh machine that has only $RUN's arena.json and
#                                        # arena.jsonl (carried): seed 1 of $FIRST, every entrant's timings that are
#                                        # missing, in one process (--speed-only), then seed 1 of $LATER
#   bash scripts/arena_round.sh launch [all|more]   # that stage in its own process session (it outlives the command)
#   DEST=$OUT bash scripts/arena_round.sh wait   # progress until `all` ends or WAIT seconds (560) pass; the results
#                                                # so far (arena.jsonl, arena.png, the log) copied into DEST
#
# 1. seed 0 of every entrant, in the order of $ENTRANTS: the dense models of equal FLOPs first (every comparison is
#    paired with them), then duo-joint, acm, mod (capacity 1/3 and 1/8 on every other block, each also evaluated with
#    the non-realisable top-k, which shares its training), duo-random (both budgets share one training), dense BIG;
# 2. --speed: each entrant of seed 0 timed one after the other in one process (training tokens/s, prefill 16 x 1024,
#    greedy decoding at batch 1 and 64);
# 3. seed 1 of every entrant, in the same order, as far as the lease allows (the arena resumes per entrant).
# mod's capacities are set by FLOPs: at 8 layers, d = 512 and a 16k vocabulary the head is 18% of a token's FLOPs, so
# capacity 1/3 on every other block spends what dense:budget=0.5 spends (72.7% of dense BIG) and 1/8 what
# dense:budget=0.33 spends (63.5%); `compute` in the table is the figure to compare.
# PRESET=arena-toy TOKENS=... runs the same steps on a CPU, for a check of the script.
set -euo pipefail
STAGE=${1:-all}
PRESET=${PRESET:-arena}
RUN=${RUN:-runs/arena-h200}
EVAL_TOKENS=${EVAL_TOKENS:-524288}
ENTRANTS=${ENTRANTS:-dense:budget=0.5,dense:budget=0.33,duo-joint:budget=0.5,duo-joint:budget=0.33,acm:budget=0.5,acm:budget=0.33,mod:capacity=0.333,every=2,mod:capacity=0.333,every=2,routing=topk,mod:capacity=0.125,every=2,mod:capacity=0.125,every=2,routing=topk,duo-random:budget=0.5,duo-random:budget=0.33,dense}
FIRST=${FIRST:-dense:budget=0.5,mod:capacity=0.333,every=2,mod:capacity=0.333,every=2,routing=topk,mod:capacity=0.125,every=2,mod:capacity=0.125,every=2,routing=topk,dense:budget=0.33}
LATER=${LATER:-acm:budget=0.5,acm:budget=0.33}
BASE=(--out "$RUN" --preset "$PRESET" --eval-tokens "$EVAL_TOKENS")
[ -n "${TOKENS:-}" ] && BASE+=(--tokens "$TOKENS")
FLAGS=("${BASE[@]}" --entrants "$ENTRANTS")
duo() { python -m duollm "$@"; }
say() { echo "[$(date +%T)] $*"; }

setup() {
  mkdir -p "$RUN"
  if [ "$PRESET" = arena ] && [ ! -e .cache/corpus/MANIFEST.json ]; then
    duo data build --from-archive .cache/corpus.tar.xz
  fi
  python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
}

case "$STAGE" in
  all)
    setup
    say "seed 0"
    duo arena "${FLAGS[@]}"
    say "speed"
    duo arena "${FLAGS[@]}" --speed
    say "seed 1"
    duo arena "${FLAGS[@]}" --seeds 2
    say "done"
    touch "$RUN/.done"
    ;;
  more)
    setup
    say "seed 1 of $FIRST"
    duo arena "${BASE[@]}" --entrants "$FIRST" --seeds 2
    say "timings"
    duo arena "${FLAGS[@]}" --seeds 2 --speed-only
    say "seed 1 of $LATER"
    duo arena "${BASE[@]}" --entrants "$LATER" --seeds 2
    say "done"
    touch "$RUN/.done"
    ;;
  launch)
    mkdir -p "$RUN"
    rm -f "$RUN/.done"
    cp "$0" "$RUN.sh"  # the running copy: a resent working tree cannot change the script under it
    setsid nohup bash "$RUN.sh" "${2:-all}" > "$RUN.log" 2>&1 < /dev/null &
    say "launched: $RUN.log"
    ;;
  wait)
    [ -e "$RUN/.done" ] || pgrep -f "$RUN.sh" > /dev/null || { say "no round is running here"; tail -n 20 "$RUN.log" 2>/dev/null; exit 1; }
    until [ -e "$RUN/.done" ] || [ $SECONDS -ge "${WAIT:-560}" ] || ! pgrep -f "$RUN.sh" > /dev/null; do sleep 5; done
    tail -n 40 "$RUN.log"
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null || true
    if [ -n "${DEST:-}" ]; then
      mkdir -p "$DEST"
      cp "$RUN/arena.jsonl" "$RUN/arena.json" "$RUN/arena.png" "$RUN.log" "$DEST"/ 2>/dev/null || true
    fi
    [ -e "$RUN/.done" ] && say "ended" || say "still running"
    ;;
  *)
    echo "unknown stage $STAGE (all, launch, wait)" >&2
    exit 2
    ;;
esac
