#!/usr/bin/env bash
# The GPU study (issue 6), one stage per command, each meant to stay under the GPU machine's 10 minutes:
#
#   bash scripts/study.sh train          # the corpus from its archive, stage-1 training (preset study-124m)
#   bash scripts/study.sh oracle-prose   # k = 0..12, free, the 6>2 schedule: shared + causal, fixed, best-of-N; big/skip
#   bash scripts/study.sh oracle-code    # the same on code-val
#   bash scripts/study.sh routers        # paper router at 4/12, 6/12, 8/12 BIG; supervised at 6/12; scored on prose-val
#   bash scripts/study.sh freeze         # claim 7 on a smaller model: from scratch vs dense-then-small, equal tokens
#   bash scripts/study.sh report         # difficulty, report.html, the seven claims; everything small packed into $OUT
#
# The run directory ($RUN, default runs/study, git-ignored) stays on the machine between commands of one lease;
# checkpoints never leave it (too large to copy back), so the stages of one study run back to back. Results
# worth keeping land in $OUT (the device tool's folder; default $RUN-out): the `report` stage packs the run's
# JSON, JSONL, HTML and PNG files into $OUT/study.tar.gz. Each stage prints its own wall time.
#
# Knobs (environment): RUN, OUT, SEQS (held-out windows per split, default 256), SEQ_LEN (512), RANDOM_N (100),
# EVAL_TOKENS (held-out tokens per `freeze` evaluation, 0 = all), TRAIN_ARGS (extra flags for `duollm train`, e.g. --train.steps=3000), ORACLE_ARGS, ROUTER_ARGS (extra flags for
# `duollm oracle` / `duollm router train`), NPROC (GPUs, default 1). `bash scripts/study.sh smoke` runs every
# stage with a tiny model on a CPU (NPROC=2 works there too, over gloo): a check of the commands, not a study.
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE=${1:?usage: scripts/study.sh train|oracle-prose|oracle-code|routers|freeze|report|smoke}
RUN=${RUN:-runs/study}
OUT=${OUT:-$RUN-out}
SEQS=${SEQS:-256}
SEQ_LEN=${SEQ_LEN:-512}
RANDOM_N=${RANDOM_N:-100}
BUDGETS=${BUDGETS:-0-12,free,6>2}  # big/small: exactly k BIG (claims 1, 2, 3), free, and the schedule of claim 5
SKIP_BUDGETS=${SKIP_BUDGETS:-0-12}  # big/skip: exactly s SKIP (claim 6)
CORPUS=.cache/corpus
DUOLLM=${DUOLLM:-duollm}
NPROC=${NPROC:-1}  # GPUs: with 2 or more, training and the oracles run under torchrun (data-parallel, sharded windows)
if [ "$NPROC" -gt 1 ]; then PAR="torchrun --standalone --nproc_per_node=$NPROC -m duollm --"; else PAR=$DUOLLM; fi
mkdir -p "$OUT"

say() { echo "[study $STAGE] $*"; }
timed() { local t0=$SECONDS; "$@"; say "$(echo "${@/#*torchrun*/}" | cut -c1-100) … $((SECONDS - t0)) s"; }

oracle() {  # split name, output folder suffix
  local split=$1 tag=$2
  timed $PAR oracle --run "$RUN" --data "$CORPUS/$split.jsonl" --seqs "$SEQS" --seq-len "$SEQ_LEN" --dtype bf16 \
    --options big,small --mode causal --budgets "$BUDGETS" --random "$RANDOM_N" --out "$RUN/oracle$tag/big-small" ${ORACLE_ARGS:-}
  timed $PAR oracle --run "$RUN" --data "$CORPUS/$split.jsonl" --seqs "$SEQS" --seq-len "$SEQ_LEN" --dtype bf16 \
    --options big,skip --mode shared --budgets "$SKIP_BUDGETS" --random "$RANDOM_N" --out "$RUN/oracle$tag/big-skip" ${ORACLE_ARGS:-}
}

case $STAGE in
  train)
    [ -f "$CORPUS/MANIFEST.json" ] || timed $DUOLLM data build --from-archive .cache/corpus.tar.xz
    timed $PAR train --preset study-124m --out "$RUN" --json ${TRAIN_ARGS:-}
    cp "$RUN/config.json" "$RUN/metrics.jsonl" "$OUT/"
    ;;
  oracle-prose) oracle prose-val "" ;;
  oracle-code) oracle code-val "-code" ;;
  routers)
    for b in 0.333 0.5 0.667; do
      timed $DUOLLM router train --run "$RUN" --kind paper --budget $b --seq-len "$SEQ_LEN" --json ${ROUTER_ARGS:-}
      timed $DUOLLM router eval --run "$RUN" --kind paper --budget $b --json
    done
    timed $DUOLLM router train --run "$RUN" --kind supervised --budget 0.5 --seq-len "$SEQ_LEN" --json ${ROUTER_ARGS:-}
    timed $DUOLLM router eval --run "$RUN" --kind supervised --budget 0.5 --json
    ;;
  freeze)  # from scratch (random routing, N steps) against dense for 2N/3 steps, then only the small modules for N/3
    N=${FREEZE_STEPS:-1500}
    SMALLER=${FREEZE_ARGS:---model.d_model=512 --model.n_head=8 --model.n_kv_head=8 --model.d_big=2048 --model.d_small=128}
    timed $DUOLLM train --preset study-124m --out "$RUN-scratch" --steps "$N" --json $SMALLER ${TRAIN_ARGS:-}
    timed $DUOLLM train --preset study-124m --out "$RUN-dense" --steps $((2 * N / 3)) --json $SMALLER ${TRAIN_ARGS:-} \
      --train.p_big=1 --train.p_small=0
    timed $DUOLLM train --preset study-124m --out "$RUN-frozen" --steps $((N - 2 * N / 3)) --json $SMALLER ${TRAIN_ARGS:-} \
      --train.init="$RUN-dense" --train.train_only=small --train.warmup_steps=0
    for r in scratch frozen; do
      for pol in all-big random:0.5 all-small; do
        $DUOLLM eval --run "$RUN-$r" --policy "$pol" --data "$CORPUS/prose-val.jsonl" --seq-len "$SEQ_LEN" --json \
          --max-tokens "${EVAL_TOKENS:-0}"
      done > "$OUT/freeze-$r.jsonl"
    done
    cat "$OUT"/freeze-*.jsonl
    ;;
  report)
    timed $DUOLLM difficulty --run "$RUN" --json > "$RUN/difficulty-summary.json"
    timed $DUOLLM report --run "$RUN"
    timed $DUOLLM claims --run "$RUN" --freeze "$OUT"  # the seven verdicts, also in $RUN/claims.json
    (cd "$RUN" && find . -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.jsonl.gz' \
      -o -name '*.html' -o -name '*.png' \) ! -path './ckpt/*' -print | tar czf - -T -) > "$OUT/study.tar.gz"
    say "packed $(du -h "$OUT/study.tar.gz" | cut -f1) into $OUT/study.tar.gz"
    ;;
  smoke)  # every stage, a tiny model, a few windows: the commands work end to end (CPU, minutes)
    export RUN=${RUN%/}-smoke OUT=${RUN%/}-smoke-out SEQS=2 SEQ_LEN=32 RANDOM_N=2 BUDGETS="0-4,free,3>1" SKIP_BUDGETS=0-4
    export TRAIN_ARGS="--train.steps=2 --train.batch_size=2 --train.seq_len=32 --train.compile=false --train.log_every=1 \
      --model.n_layer=4 --model.d_model=32 --model.n_head=2 --model.n_kv_head=2 --model.d_big=64 --model.d_small=8 --model.max_seq_len=64"
    export ORACLE_ARGS="--batch-size 2" ROUTER_ARGS="--steps 2 --batch-size 2 --label-seqs 2 --calib-seqs 2"
    rm -rf "$RUN" "$RUN"-scratch "$RUN"-dense "$RUN"-frozen "$OUT"
    export FREEZE_STEPS=3 FREEZE_ARGS="--model.d_model=16" EVAL_TOKENS=2048
    for s in train oracle-prose oracle-code routers freeze report; do bash "$0" $s; done
    ;;
  *) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
