#!/usr/bin/env bash
# Routers of several seeds on one run, several trained at once (a small model leaves a GPU, or cores, idle):
# each SPEC "PREFIX:ARGS" trains PREFIX-s<seed> with `duollm router train --run RUN ARGS --seed <seed>` and then
# evaluates it on the windows of RUN's oracle (`duollm router eval --seqs 0`), for every seed in SEEDS. Routers that
# were already evaluated are kept, so a second call resumes. Then compare with experiments/routers/seeds.py.
#
#   RUN=runs/demo-wide SEEDS="0 1 2" JOBS=2 bash experiments/routers/demo_seeds.sh \
#     "paper-1000:--kind paper --budget 0.5 --steps 1000" \
#     "expc-2048:--kind supervised --head expected --labels causal --budget 0.5 --label-seqs 2048 --label-batch-size 128 --steps 1000"
#   python3 experiments/routers/seeds.py runs/demo-wide paper-1000-s expc-2048-s --seeds 3
#
# Logs: RUN/logs/PREFIX-s<seed>.log (one line per job here when it ends, with its seconds). DUOLLM: the command to run
# (default duollm, or python3 -m duollm).
set -euo pipefail
RUN=${RUN:?give RUN=the run directory}
SEEDS=${SEEDS:-0 1 2}
JOBS=${JOBS:-2}
[ $# -ge 1 ] || { echo "error: give at least one PREFIX:ARGS spec" >&2; exit 2; }
[ -d "$RUN/ckpt" ] || { echo "error: $RUN is not a trained run (no $RUN/ckpt)" >&2; exit 2; }
if command -v duollm >/dev/null; then DUOLLM=${DUOLLM:-duollm}; else DUOLLM=${DUOLLM:-python3 -m duollm}; fi
export RUN DUOLLM
mkdir -p "$RUN/logs"
one() {  # PREFIX SEED ARGS...
  local name=$1-s$2 seed=$2 t0=$SECONDS
  shift 2
  if compgen -G "$RUN/routers/$name/eval-*.json" >/dev/null; then echo "$name: kept"; return 0; fi
  if $DUOLLM router train --run "$RUN" "$@" --seed "$seed" --name "$name" >"$RUN/logs/$name.log" 2>&1 &&
    $DUOLLM router eval --run "$RUN" --name "$name" --seqs 0 >>"$RUN/logs/$name.log" 2>&1; then
    echo "$name: $(tail -n 1 "$RUN/logs/$name.log") ($((SECONDS - t0)) s)"
  else
    echo "$name: FAILED, see $RUN/logs/$name.log"; return 1
  fi
}
export -f one
for spec in "$@"; do
  case $spec in *:*) ;; *) echo "error: spec $spec is not PREFIX:ARGS" >&2; exit 2 ;; esac
  for s in $SEEDS; do printf '%s\0' "${spec%%:*} $s ${spec#*:}"; done
done | xargs -0 -P "$JOBS" -I{} bash -c 'one {}'
