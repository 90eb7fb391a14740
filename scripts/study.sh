#!/usr/bin/env bash
# The GPU study (docs/results.md). One stage per command, or all of them:
#
#   bash scripts/study.sh train          # the corpus from its archive, stage-1 training (preset study-124m)
#   bash scripts/study.sh oracle-prose   # k = 0..12, free, the 6>2 schedule: shared + causal, fixed, best-of-N; big/skip
#   bash scripts/study.sh oracle-code    # the same on code-val
#   bash scripts/study.sh routers        # paper routers (4/12, 6/12, 8/12 BIG, 6/12 SKIP, 3-way) and supervised ones
#                                        # (route heads at 4/12, 6/12, 8/12; the priced head and both layer heads at
#                                        # 6/12), each scored on prose-val and code-val (the parts: routers-paper,
#                                        # routers-supervised, router-evals)
#   bash scripts/study.sh label-free     # the share of the oracle's gap that a choice without the label recovers (k = 6)
#   bash scripts/study.sh freeze         # claim 7 on a smaller model: from scratch vs dense-then-small, equal tokens
#   bash scripts/study.sh report         # difficulty, report.html, the seven claims; everything small packed into $OUT
#   bash scripts/study.sh all            # every stage; with G GPUs, G at a time (the oracle stages split per split and
#                                        # options: oracle-prose-big-small, oracle-code-big-skip, ...)
#
# The run directory ($RUN, default runs/study, git-ignored) stays on the machine between commands of one lease;
# checkpoints never leave it (too large to copy back), so the stages of one study run back to back, and the whole
# study must fit one lease of the GPU machine. On that machine, where one command may run 10 minutes,
# `launch` starts `all` in its own process session (it outlives the command) and `wait` follows it:
#
#   bash scripts/study.sh launch         # → $RUN.log; returns at once
#   DEST=$OUT bash scripts/study.sh wait # prints progress until `all` ends or WAIT seconds (560) pass, then packs
#                                        # the results so far and copies them ($RUN-out) into DEST
#
# On two GPUs (after the first lease, which trained on one GPU and ran the freeze ablation, kept in docs/study/freeze):
#
#   mkdir -p runs/study.state && touch runs/study.state/skip-freeze
#   TRAIN_NPROC=2 FREEZE_DIR=docs/study/freeze bash scripts/study.sh launch   # then `wait` until it ends
#
# On one GPU (the leases after the second; the third took 1370 s, docs/log.md says how, before the priced head
# and the mean-target layer head joined `routers-supervised`, about 160 s more, unmeasured together): 3000 training
# steps, two lanes sharing the GPU, windows of 256 tokens, and the causal oracle on code-val for the counts the
# claims and routers read:
#
#   mkdir -p runs/study.state && touch runs/study.state/skip-freeze
#   LANES=2 SEQ_LEN=256 TRAIN_ARGS=--train.steps=3000 CODE_CAUSAL_BUDGETS=0,1,2,4,6,8,10,12,6\>2 \
#     FREEZE_DIR=docs/study/freeze bash scripts/study.sh launch
#
# `all` keeps its state beside the run, in $RUN.state: each stage's log, `.done` (its exit status) and the
# `skip-STAGE` files: `touch $RUN.state/skip-STAGE` before a stage starts makes `all` leave it out (to stay inside
# a lease).
# Results worth keeping land in $OUT (default $RUN-out): the `report` stage packs the run's JSON, JSONL, HTML, PNG
# and log files (not the per-token tables) into $OUT/study.tar.gz. Each stage prints its own wall time.
#
# Knobs (environment): RUN, OUT, SEQS (held-out windows per split, default 256, spread evenly over the split),
# SEQ_LEN (512), RANDOM_N (100), CAUSAL_BUDGETS (budgets the causal oracle runs for, default 0-12,6>2; on code-val
# CODE_CAUSAL_BUDGETS, default the same),
# LABEL_FREE_BUDGETS (the `label-free` stage's BIG counts, default 6: C(12, 6) = 924 forwards of every window),
# LABEL_FREE_SPLITS (default prose-val code-val),
# PAPER_BUDGETS / SUPERVISED_BUDGETS (BIG fractions of the big/small routers), PAPER_OTHER (the other paper routers,
# BUDGET:OPTIONS each; default 0.5:big,skip 0.5,0.3,0.2:big,small,skip; empty for none), SUPERVISED_LABELS (the route
# head's oracle labels, default causal; `causal shared` trains both), SUPERVISED_ARGS / LAYER_ARGS (label windows of the
# supervised routers, route and layer heads), LAYER_HEAD (1: train the layer head; 0: leave it out), LAYER_MEAN /
# LAYER_MEAN_ARGS (the layer head with --values mean: 1 or 0, and its label flags; add --shrink there for the shrunk
# scores), EXPECTED_HEAD / EXPECTED_ARGS (the expected-loss head: 1 or 0, default 0, and its flags), PRICED_BUDGETS /
# PRICED_ARGS (the priced route head's BIG fractions, default 0.5, and its label flags),
# EVAL_TOKENS (held-out tokens per `freeze` evaluation, 0 = all), FREEZE_DIR (where `report` finds the freeze
# results; default $OUT; docs/study/freeze holds the first lease's), TRAIN_ARGS (extra flags for `duollm train`, e.g.
# --train.steps=3000), ORACLE_ARGS, ROUTER_ARGS (extra flags for `duollm oracle` / `duollm router train`), NPROC (GPUs
# for the train and oracle stages, under torchrun; default 1), TRAIN_NPROC (GPUs for the train stage alone; in `all`,
# training then takes them all and the freeze ablation moves after it), LANES (stages at a time in `all`).
# `bash scripts/study.sh smoke` runs every stage with a tiny model on a CPU (NPROC=2 works there too, over gloo):
# a check of the commands, not a study.
set -euo pipefail
cd "${STUDY_ROOT:-$(dirname "$0")/..}"
export STUDY_ROOT=$PWD PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

STAGE=${1:?usage: scripts/study.sh train|oracle-prose|oracle-code|routers|freeze|report|all|launch|wait|smoke}
RUN=${RUN:-runs/study}
OUT=${OUT:-$RUN-out}
STATE=$RUN.state  # `all`: stage logs, .done, skip-STAGE
SEQS=${SEQS:-256}
SEQ_LEN=${SEQ_LEN:-512}
RANDOM_N=${RANDOM_N:-100}
BUDGETS=${BUDGETS:-0-12,free,6>2}  # big/small: exactly k BIG (claims 1, 2, 3), free, and the schedule of claim 5
SKIP_BUDGETS=${SKIP_BUDGETS:-0-12}  # big/skip: exactly s SKIP (claim 6)
CAUSAL_BUDGETS=${CAUSAL_BUDGETS:-0-12,6>2}  # the causal oracle: every count and the schedule (free costs as much as all counts)
CODE_CAUSAL_BUDGETS=${CODE_CAUSAL_BUDGETS:-$CAUSAL_BUDGETS}  # on code-val (its cost grows with the routes: C(12, k) at k)
RANDOM_BUDGETS=${RANDOM_BUDGETS:-4,6,8}  # random best-of-N: the routers' budgets (claim 4); 100 trials cost ~40 s a budget
# (ORACLE_BATCH, windows per forward, default 128: the random trials kept the GPU 27% busy at 64; CAUSAL_BATCH 256)
CORPUS=.cache/corpus
if command -v duollm >/dev/null; then DUOLLM=${DUOLLM:-duollm}; else DUOLLM=${DUOLLM:-python3 -m duollm}; fi
NPROC=${NPROC:-1}  # GPUs: with 2 or more, training and the oracles run under torchrun (data-parallel, sharded windows)
if [ "$NPROC" -gt 1 ]; then PAR="torchrun --standalone --nproc_per_node=$NPROC -m duollm --"; else PAR=$DUOLLM; fi
mkdir -p "$OUT"

say() { echo "[study $STAGE] $*"; }
timed() { local t0=$SECONDS; "$@"; say "$(echo "${@/#*torchrun*/}" | cut -c1-100) … $((SECONDS - t0)) s"; }

oracle() {  # split name (prose-val, code-val), options (big,small or big,skip; default both)
  local split=$1 tag options=${2:-big,small big,skip} causal=$CAUSAL_BUDGETS
  tag=$([ "$split" = prose-val ] && echo "" || echo "-${split%-val}")
  [ "$split" = prose-val ] || causal=$CODE_CAUSAL_BUDGETS
  local common=(--run "$RUN" --data "$CORPUS/$split.jsonl" --seqs "$SEQS" --pick spread --seq-len "$SEQ_LEN" --dtype bf16
    --batch-size "${ORACLE_BATCH:-128}" --causal-batch-size "${CAUSAL_BATCH:-256}")
  if [[ $options == *big,small* ]]; then
    timed $PAR oracle "${common[@]}" --options big,small --mode causal --budgets "$BUDGETS" --causal-budgets "$causal" \
      --random "$RANDOM_N" --random-budgets "$RANDOM_BUDGETS" --out "$RUN/oracle$tag/big-small" ${ORACLE_ARGS:-}
  fi
  if [[ $options == *big,skip* ]]; then
    timed $PAR oracle "${common[@]}" --options big,skip --mode shared --budgets "$SKIP_BUDGETS" --random 0 \
      --out "$RUN/oracle$tag/big-skip" ${ORACLE_ARGS:-}
  fi
}

router_train() {  # kind, budget, options, extra flags
  local kind=$1 budget=$2 options=$3
  shift 3
  timed $DUOLLM router train --run "$RUN" --kind "$kind" --budget "$budget" --options "$options" --seq-len "$SEQ_LEN" \
    --dtype bf16 --json "$@" ${ROUTER_ARGS:-}  # `router eval` follows the oracle's --dtype (bf16)
}

router_eval() {  # router name: scored on the oracles' windows of prose-val, and of code-val where its oracle ran
  local name=$1 opt
  opt=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("options_flag", "big,small").replace(",", "-"))' \
    "$RUN/routers/$name/router.json")
  # the oracles' windows and precision, also for a router with no oracle of its options (the 3-way one), which
  # would otherwise be scored on windows of the training length, in fp32
  local ev=(router eval --run "$RUN" --name "$name" --seqs "$SEQS" --pick spread --seq-len "$SEQ_LEN" --dtype bf16 --json)
  timed $DUOLLM "${ev[@]}"
  if [ -f "$RUN/oracle-code/$opt/summary.json" ]; then
    timed $DUOLLM "${ev[@]}" --data "$CORPUS/code-val.jsonl" --oracle "$RUN/oracle-code/$opt"
  fi
}

lanes() {  # jobs NAME:SECONDS, longest first onto the least-loaded of $LANES lanes (lane g on GPU g mod GPUS: more
  # lanes than GPUs share them, which overlaps the host-bound phases), each lane in order; waits for all
  local -a load=() jobs=() pids=()
  local g best job rc=0
  for ((g = 0; g < LANES; g++)); do load[g]=0; jobs[g]=""; done
  for job in $(printf '%s\n' "$@" | sort -t: -k2 -nr); do
    [ -e "$STATE/skip-${job%%:*}" ] && { say "skipping ${job%%:*} ($STATE/skip-${job%%:*})"; continue; }  # no lane for it
    best=0
    for ((g = 1; g < LANES; g++)); do if ((load[g] < load[best])); then best=$g; fi; done
    load[best]=$((load[best] + ${job##*:})); jobs[best]+=" ${job%%:*}"
  done
  for ((g = 0; g < LANES; g++)); do
    [ -n "${jobs[g]}" ] || continue
    (for name in ${jobs[g]}; do stage "$name" "$([ "$GPUS" -gt 0 ] && echo $((g % GPUS)))" || exit 1; done) &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  return $rc
}

stage() {  # run one stage unless $STATE/skip-STAGE exists; on a GPU when given one; its output to $STATE/STAGE.log
  local name=$1 gpu=${2:-} t0=$SECONDS
  if [ -e "$STATE/skip-$name" ]; then say "skipping $name ($STATE/skip-$name)"; return 0; fi
  say "$name starts${gpu:+ on GPU $gpu}"
  if CUDA_VISIBLE_DEVICES=${gpu:-${CUDA_VISIBLE_DEVICES:-}} bash "$0" "$name" > "$STATE/$name.log" 2>&1; then
    say "$name done in $((SECONDS - t0)) s"
  else
    say "$name FAILED; the end of $STATE/$name.log:"; tail -n 20 "$STATE/$name.log"; return 1
  fi
}

case $STAGE in
  train)
    [ -f "$CORPUS/MANIFEST.json" ] || timed $DUOLLM data build --from-archive .cache/corpus.tar.xz
    n=${TRAIN_NPROC:-$NPROC} par=$DUOLLM split=()
    if [ "$n" -gt 1 ]; then  # the preset's batch of 32 sequences, split over the ranks: the same batches, the same run
      par="torchrun --standalone --nproc_per_node=$n -m duollm --" split=(--train.batch_size=$((32 / n)))
    fi
    timed $par train --preset study-124m --out "$RUN" --json "${split[@]}" ${TRAIN_ARGS:-}
    cp "$RUN/config.json" "$RUN/metrics.jsonl" "$OUT/"
    ;;
  oracle-prose) oracle prose-val ;;
  oracle-code) oracle code-val ;;
  oracle-prose-big-small | oracle-prose-big-skip | oracle-code-big-small | oracle-code-big-skip)
    split=${STAGE#oracle-}; opt=${split#*-}; oracle "${split%%-*}-val" "${opt/-/,}" ;;
  routers) bash "$0" routers-paper && bash "$0" routers-supervised && bash "$0" router-evals ;;
  routers-paper)  # BIG fractions 4/12, 6/12, 8/12; 6/12 SKIP; 3-way 50/30/20
    for b in ${PAPER_BUDGETS-0.333 0.5 0.667}; do router_train paper $b big,small; done
    for spec in ${PAPER_OTHER-0.5:big,skip 0.5,0.3,0.2:big,small,skip}; do router_train paper "${spec%%:*}" "${spec#*:}"; done
    ;;
  routers-supervised)  # oracle-labelled route heads (exact budgets: whole layers), the priced head, the layer heads at 6/12
    for labels in ${SUPERVISED_LABELS:-causal}; do
      for b in ${SUPERVISED_BUDGETS-0.5 0.333 0.667}; do
        router_train supervised $b big,small --labels $labels ${SUPERVISED_ARGS:---label-seqs 256 --label-batch-size 128}
      done
    done
    for b in ${PRICED_BUDGETS-0.5}; do  # every route (2^L), a price per BIG layer: the budget met on average
      router_train supervised $b big,small --head priced ${PRICED_ARGS:---labels shared --label-seqs 256 --label-batch-size 64}
    done
    if [ "${LAYER_HEAD:-1}" = 1 ]; then  # labels from the free oracle: 2^L routes
      router_train supervised 0.5 big,small --head layer ${LAYER_ARGS:---label-seqs 64 --label-batch-size 64}
    fi
    if [ "${LAYER_MEAN:-1}" = 1 ]; then  # the same head on each layer's value averaged over every route, random-route states
      router_train supervised 0.5 big,small --head layer --values mean ${LAYER_MEAN_ARGS:---labels shared --label-seqs 256 --label-batch-size 64}
    fi
    if [ "${EXPECTED_HEAD:-0}" = 1 ]; then  # the paper's objective over the table of every route (2^L), from the fixed route
      # causal labels: the best on the demo model; at 12 layers 512 windows take about 110 s on an H200 (docs/results.md)
      router_train supervised 0.5 big,small --head expected ${EXPECTED_ARGS:---labels causal --label-seqs 512 --label-batch-size 64 --steps 1000}
    fi
    ;;
  label-free)  # how much of the oracle's gap a choice that knows every route's prediction, not the label, recovers
    for split in ${LABEL_FREE_SPLITS:-prose-val code-val}; do
      timed python3 scripts/label_free.py "$RUN" --split "$CORPUS/$split.jsonl" --seqs "$SEQS" --seq-len "$SEQ_LEN" \
        --pick spread --budgets "${LABEL_FREE_BUDGETS:-6}" --dtype bf16 --json --out "$RUN/label-free-$split.jsonl"
    done
    ;;
  router-evals) for r in "$RUN"/routers/*/router.json; do router_eval "$(basename "$(dirname "$r")")"; done ;;
  router-evals-paper | router-evals-supervised)
    for r in "$RUN"/routers/"${STAGE#router-evals-}"-*/router.json; do router_eval "$(basename "$(dirname "$r")")"; done ;;
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
    timed $DUOLLM claims --run "$RUN" --freeze "${FREEZE_DIR:-$OUT}"  # the seven verdicts, also in $RUN/claims.json
    bash "$0" pack
    ;;
  pack)  # the run's results, the stage logs, and the freeze runs' configs and metrics; no checkpoints or per-token tables
    dirs=$(cd "$(dirname "$RUN")" && for d in "$(basename "$RUN")"{,.state,-scratch,-dense,-frozen}; do if [ -d "$d" ]; then echo "$d"; fi; done)
    [ -n "$dirs" ] || exit 0
    (cd "$(dirname "$RUN")" && find $dirs -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.html' -o -name '*.png' \
      -o -name '*.log' \) ! -path '*/ckpt/*' -print | tar czf - -T -) > "$OUT/study.tar.gz"
    say "packed $(du -h "$OUT/study.tar.gz" | cut -f1) into $OUT/study.tar.gz"
    ;;
  all)  # every stage: with two GPUs or more, two stages at a time; the end is marked by $STATE/.done (its exit status)
    mkdir -p "$STATE" && rm -f "$STATE/.done"
    trap 'echo $? > "$STATE/.done"' EXIT
    [ -f "$CORPUS/MANIFEST.json" ] || timed $DUOLLM data build --from-archive .cache/corpus.tar.xz
    GPUS=$(python3 -c 'import torch; print(torch.cuda.device_count())')
    LANES=${LANES:-$((GPUS > 0 ? GPUS : 1))}  # stages at a time (on a CPU, LANES=2 checks the scheduling)
    # stages side by side share the cores: the first lease ran two trainings side by side at 236k and 226k tokens/s
    # a GPU, far below the 366k of one alone in docs/benchmarks.md; a thread per core in each is one suspect (unmeasured)
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(($(nproc) / LANES > 0 ? $(nproc) / LANES : 1))}
    say "$GPUS GPU(s)"
    rc=0
    # 1. the model: on one GPU beside the freeze ablation (which needs no model), or data-parallel on TRAIN_NPROC
    # GPUs; 2. everything that reads the model, longest first (seconds measured on an H200, or estimated)
    later=()
    if [ "${TRAIN_NPROC:-1}" -gt 1 ]; then stage train || rc=1; later=(freeze:760); else lanes train:700 freeze:760 || rc=1; fi
    [ -f "$RUN/ckpt/latest.json" ] || { say "no model in $RUN: stopping"; exit 1; }
    lanes oracle-prose-big-small:620 oracle-code-big-small:620 routers-supervised:360 routers-paper:150 \
      oracle-prose-big-skip:120 oracle-code-big-skip:120 label-free:300 "${later[@]}" || rc=1
    lanes router-evals-paper:100 router-evals-supervised:60 || rc=1
    stage report || rc=1
    exit $rc
    ;;
  launch)  # `all` in its own process session, so that it outlives the command that starts it
    mkdir -p "$(dirname "$RUN")"
    cp "$0" "$RUN.sh"  # the running copy: a resent working tree cannot change the script under it
    setsid nohup bash "$RUN.sh" all > "$RUN.log" 2>&1 < /dev/null &
    say "launched: $RUN.log"
    ;;
  wait)  # until `all` ends or WAIT seconds pass: progress, then (once ended) the results into DEST
    # a machine that was given back comes back bare: with no study running there, say so at once (and waste no time)
    [ -e "$STATE/.done" ] || pgrep -f "$RUN.sh all" > /dev/null || { say "no study is running here (no $RUN.sh all)"; exit 1; }
    until [ -e "$STATE/.done" ] || [ $SECONDS -ge "${WAIT:-560}" ] || ! pgrep -f "$RUN.sh all" > /dev/null; do sleep 5; done
    cat "$RUN.log"
    for f in "$STATE"/*.log; do [ -e "$f" ] && { echo "--- $f"; tail -n 4 "$f" | tr '\r' '\n' | tail -n 4 | cut -c1-300; }; done
    nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader 2>/dev/null || true
    if [ -e "$STATE/.done" ]; then say "ended with status $(cat "$STATE/.done")"; else bash "$0" pack || true; fi  # so far
    if [ -n "${DEST:-}" ]; then
      cp "$OUT"/* "$RUN.log" "$DEST"/ 2>/dev/null || true
      if [ "$(stat -c %s "$DEST/study.tar.gz" 2>/dev/null || echo 0)" -gt 15000000 ]; then  # files come back up to 16 MiB
        split -b 15000000 -d "$DEST/study.tar.gz" "$DEST/study.tar.gz.part" && rm "$DEST/study.tar.gz"  # cat parts | tar xz
      fi
    fi
    ;;
  smoke)  # every stage, a tiny model, a few windows: the commands work end to end (CPU, minutes)
    export RUN=${RUN%/}-smoke OUT=${RUN%/}-smoke-out SEQS=2 SEQ_LEN=32 RANDOM_N=2 BUDGETS="0-4,free,3>1" SKIP_BUDGETS=0-4 \
      CAUSAL_BUDGETS="1,2,3>1" RANDOM_BUDGETS=2 SUPERVISED_BUDGETS="0.5 0.25" \
      SUPERVISED_ARGS="--label-seqs 2 --label-batch-size 2" LAYER_ARGS="--label-seqs 2 --label-batch-size 2" \
      PRICED_ARGS="--labels shared --label-seqs 4 --label-batch-size 2" LAYER_MEAN_ARGS="--labels shared --label-seqs 2 --label-batch-size 2" \
      EXPECTED_HEAD=1 EXPECTED_ARGS="--labels shared --label-seqs 4 --label-batch-size 2 --steps 30"
    export TRAIN_ARGS="--train.steps=2 --train.batch_size=2 --train.seq_len=32 --train.compile=false --train.log_every=1 \
      --model.n_layer=4 --model.d_model=32 --model.n_head=2 --model.n_kv_head=2 --model.d_big=64 --model.d_small=8 --model.max_seq_len=64"
    export ORACLE_ARGS="--batch-size 2 --causal-batch-size 2" ROUTER_ARGS="--steps 2 --batch-size 2 --calib-seqs 2"
    rm -rf "$RUN" "$RUN"-scratch "$RUN"-dense "$RUN"-frozen "$OUT"
    export FREEZE_STEPS=3 FREEZE_ARGS="--model.d_model=16" EVAL_TOKENS=2048
    export LABEL_FREE_BUDGETS=2
    for s in train oracle-prose oracle-code routers label-free freeze report; do bash "$0" $s; done
    rm -rf "$RUN-all" "$RUN-all"-* "$RUN-all.state" && RUN=$RUN-all OUT=$RUN-out LANES=2 bash "$0" all  # `all`, 2 at a time
    ;;
  *) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
