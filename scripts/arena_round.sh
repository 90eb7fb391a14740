#!/usr/bin/env bash
# The arena round of docs/results.md on one GPU: every entrant of issue 21 at two budgets, at the `arena` preset.
#
#   bash scripts/arena_round.sh all      # the corpus from .cache/corpus.tar.xz, then the three steps below
#   bash scripts/arena_round.sh more     # a second lease, on a fresh machine that has only $RUN's arena.json and
#                                        # arena.jsonl (carried): seed 1 of $FIRST, every entrant's timings that are
#                                        # missing, in one process (--speed-only), then seed 1 of $LATER
#   bash scripts/arena_round.sh part2    # the entrants of part 2 (docs/arena.md) beside the rows of the first round
#                                        # ($RUN's arena.json and arena.jsonl carried): $PART2, each trained once per
#                                        # seed whatever its evaluation options, then their timings
#   bash scripts/arena_round.sh frozen   # duo-joint against the paper's router on the frozen duo-random base: seed 1
#                                        # of duo-joint and duo-random at both budgets (their models, with run/, stay
#                                        # on this machine), then per budget the paper router trained on duo-random's
#                                        # model at duo-joint's realised mix of choices (methods.joint.paper_router_flags)
#                                        # and evaluated on the arena's windows: $RUN/frozen-B-SPLIT.json
#   bash scripts/arena_round.sh confirm  # the leaders confirmed at study-124m scale (12 layers, d = 768), at the
#                                        # arena's 39.3M training tokens: $CONFIRM into $RUN-124m
#   bash scripts/arena_round.sh rest     # one lease for all of the above but `all` and `more`: part 2's training, frozen
#                                        # (then seed 1 of acm:budget=0.33) and confirm's training as three processes
#                                        # sharing the GPU (their train_seconds are not comparable), then part 2's and
#                                        # confirm's timings alone, one after the other (part2-train, part2-speed,
#                                        # acm1, confirm-train, confirm-speed are its pieces)
#   bash scripts/arena_round.sh launch [all|more|part2|frozen|confirm|rest|part2-time]   # that stage in its own process
#                                        # session (part2-time: seed 0 of part 2's entrants and the dense models of equal
#                                        # FLOPs trained again into $RUN-time, then all timed in one process)
#   CHAIN="part2-train part2-seed1 part2-speed trainbench decode" bash scripts/arena_round.sh launch chain   # pieces, in
#                                        # order (part2-seed1: seed 1 of $PART2; part2-pair: seeds 0 and 1 side by side; decode: scripts/decode_round.sh into
#                                        # $RUN-decode; trainbench: bench_train at gpt2-124m, dense, random, exact counts)
#   DEST=$OUT bash scripts/arena_round.sh wait   # progress until the stage ends or WAIT seconds (560) pass; the
#                                                # results so far (arena.*, frozen*.json, the logs, $RUN-124m's arena.*)
#                                                # packed into DEST/results.tar.gz. Call it again at once: a machine
#                                                # left idle goes back, with everything on it
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
SEQ_LEN=${SEQ_LEN:-1024}  # the preset's train.seq_len: the arena's windows
ENTRANTS=${ENTRANTS:-dense:budget=0.5,dense:budget=0.33,duo-joint:budget=0.5,duo-joint:budget=0.33,acm:budget=0.5,acm:budget=0.33,mod:capacity=0.333,every=2,mod:capacity=0.333,every=2,routing=topk,mod:capacity=0.125,every=2,mod:capacity=0.125,every=2,routing=topk,duo-random:budget=0.5,duo-random:budget=0.33,dense}
FIRST=${FIRST:-dense:budget=0.5,mod:capacity=0.333,every=2,mod:capacity=0.333,every=2,routing=topk,mod:capacity=0.125,every=2,mod:capacity=0.125,every=2,routing=topk,dense:budget=0.33}
LATER=${LATER:-acm:budget=0.5,acm:budget=0.33}
# part 2, at the first round's two FLOP levels (72.7% and 63.5% of dense BIG): early exit and halting calibrated to
# the dense models of equal FLOPs, and their threshold frontiers (evaluation options: one training each; at d = 512
# and a 16k vocabulary one head check costs 1.8 layers, so layerskip also checks only after layers 3 and 5); FFN-SkipLLM
# on the dense model; Mixture-of-Recursions on a stack of 4 (or 3) of the 8 layers, whose blocks-run share 4/8 x 4/3
# = 0.667 (3/8 x 1.475 = 0.553) gives the FLOPs of dense:budget=0.5 (0.33), beside the plain recursive models; dense BIG
# (seed 1 was missing) and halting at beta = 1 (at PonderNet's 0.01 the halting mass all went to the last layer)
CONFIRM=${CONFIRM:-dense:budget=0.33,mod:capacity=0.125,every=2,dense:budget=0.5,mod:capacity=0.333,every=2}
CONFIRM_PRESET=${CONFIRM_PRESET:-study-124m}
CONFIRM_TOKENS=${CONFIRM_TOKENS:-39321600}
CONFIRM_SEEDS=${CONFIRM_SEEDS:-1}  # seeds 0.. of each; those already in $RUN-124m are kept
PART2=${PART2:-dense,layerskip:budget=0.5,layerskip:budget=0.33,layerskip:min_layer=3,check_every=2,budget=0.5,layerskip:min_layer=3,check_every=2,budget=0.33,layerskip:min_layer=3,check_every=2,threshold=0.5,layerskip:min_layer=3,check_every=2,threshold=0.8,layerskip:min_layer=3,check_every=2,threshold=0.95,halting:budget=0.5,halting:budget=0.33,halting:threshold=0.3,halting:threshold=0.7,halting:threshold=0.9,dense:skipllm=0.9,dense:skipllm=0.95,dense:skipllm=0.98,mor:layers=4,capacity=0.333,mor:layers=4,capacity=0.333,routing_eval=topk,mor:layers=3,capacity=0.475,mor:layers=4,routing=token,budget=1.333,mor:layers=3,routing=none,recursions=2,mor:layers=2,routing=none,recursions=3,halting:beta=1,budget=0.5,halting:beta=1,budget=0.33,halting:beta=1,threshold=0.5}
BASE=(--out "$RUN" --preset "$PRESET" --eval-tokens "$EVAL_TOKENS")
[ -n "${TOKENS:-}" ] && BASE+=(--tokens "$TOKENS")
FLAGS=("${BASE[@]}" --entrants "$ENTRANTS")
duo() { python -m duollm "$@"; }
say() { echo "[$(date +%T)] $*"; }
done_() { say "done"; [ -n "${SUB:-}" ] || touch "$RUN/.done"; }  # a piece of `rest` leaves the marker to it
TIME_FLAGS=(--out "$RUN-time" --preset "$PRESET" --eval-tokens "$EVAL_TOKENS" --entrants "dense:budget=0.5,dense:budget=0.33,$PART2")
[ -n "${TOKENS:-}" ] && TIME_FLAGS+=(--tokens "$TOKENS")
CONFIRM_FLAGS=(--out "$RUN-124m" --preset "$CONFIRM_PRESET" --eval-tokens "$EVAL_TOKENS" --tokens "$CONFIRM_TOKENS" --entrants "$CONFIRM" --seeds "$CONFIRM_SEEDS")

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
    done_
    ;;
  more)
    setup
    say "seed 1 of $FIRST"
    duo arena "${BASE[@]}" --entrants "$FIRST" --seeds 2
    say "timings"
    duo arena "${FLAGS[@]}" --seeds 2 --speed-only
    say "seed 1 of $LATER"
    duo arena "${BASE[@]}" --entrants "$LATER" --seeds 2
    done_
    ;;
  part2-train)
    setup
    say "part 2: seed 0"
    duo arena "${BASE[@]}" --entrants "$PART2"
    done_
    ;;
  part2-speed)
    setup
    say "part 2: timings, beside the dense models of equal FLOPs timed again in the same pass"
    duo arena "${BASE[@]}" --entrants "dense:budget=0.5,dense:budget=0.33,$PART2" --speed-only
    done_
    ;;
  part2-time)  # part 2's entrants timed in one process beside the dense models of equal FLOPs: seed 0 of each trained
               # again into $RUN-time (the GPU is not deterministic, so these are not the table's models), then
               # --speed-only; about 20 minutes of one H200 (the trainings' train_seconds, one process at a time)
    setup
    say "timing pass: seed 0 of part 2 and the dense models into $RUN-time"
    duo arena "${TIME_FLAGS[@]}"
    duo arena "${TIME_FLAGS[@]}" --speed-only
    done_
    ;;
  part2-seed1)
    setup
    say "part 2: seed 1"
    duo arena "${BASE[@]}" --entrants "$PART2" --seeds 2 --first-seed 1
    done_
    ;;
  part2-pair)  # seeds 0 and 1 of part 2 as two processes sharing the GPU (their train_seconds are not comparable)
    setup
    say "part 2: seeds 0 and 1 side by side ($RUN.part2.log, $RUN.part2s1.log)"
    SUB=1 bash "$0" part2-train > "$RUN.part2.log" 2>&1 & p1=$!
    SUB=1 bash "$0" part2-seed1 > "$RUN.part2s1.log" 2>&1 & p2=$!
    failed=0
    for p in $p1 $p2; do wait $p || { say "process $p failed: see its log"; failed=1; }; done
    done_
    exit $failed
    ;;
  decode)  # not the arena: the decode measurements of scripts/decode_round.sh, into $RUN-decode (packed by `wait`)
    setup
    bash scripts/decode_round.sh "$RUN-decode"
    done_
    ;;
  trainbench)  # not the arena: routed training against dense, compiled, with and without exact counts, profiled;
               # gpt2-124m and paper-1.4b (batch 8): scripts/decode_round.sh's steps train124 and train14
    setup
    STEPS="train124 train14" bash scripts/decode_round.sh "$RUN-decode"
    done_
    ;;
  acm1)
    setup
    say "seed 1 of acm:budget=0.33"
    duo arena "${BASE[@]}" --entrants acm:budget=0.33 --seeds 2
    done_
    ;;
  confirm-train)
    setup
    say "$CONFIRM_PRESET: $CONFIRM"
    duo arena "${CONFIRM_FLAGS[@]}"
    done_
    ;;
  confirm-speed)
    setup
    say "$CONFIRM_PRESET: timings"
    duo arena "${CONFIRM_FLAGS[@]}" --speed-only
    done_
    ;;
  rest)
    setup
    say "in parallel: part 2's training ($RUN.part2.log); frozen, then acm's seed 1 ($RUN.frozen.log); confirm's training ($RUN.confirm.log)"
    SUB=1 bash "$0" part2-train > "$RUN.part2.log" 2>&1 & p1=$!
    (SUB=1 bash "$0" frozen || say "frozen failed"; SUB=1 bash "$0" acm1) > "$RUN.frozen.log" 2>&1 & p2=$!
    SUB=1 bash "$0" confirm-train > "$RUN.confirm.log" 2>&1 & p3=$!
    for p in $p1 $p2 $p3; do wait $p || say "process $p failed: see its log"; done
    say "timings, one process at a time"
    SUB=1 bash "$0" part2-speed || say "part 2's timings failed"
    SUB=1 bash "$0" confirm-speed || say "confirm's timings failed"
    done_
    ;;
  chain)  # the stages named in $CHAIN (space-separated), one after the other, each as a piece
    setup
    for st in $CHAIN; do SUB=1 bash "$0" "$st" || say "$st failed"; done
    done_
    ;;
  part2)
    setup
    say "part 2: seed 0"
    duo arena "${BASE[@]}" --entrants "$PART2"
    say "part 2: timings, beside the dense models of equal FLOPs timed again in the same pass"
    duo arena "${BASE[@]}" --entrants "dense:budget=0.5,dense:budget=0.33,$PART2" --speed-only
    done_
    ;;
  confirm)
    setup
    say "$CONFIRM_PRESET: $CONFIRM"
    duo arena "${CONFIRM_FLAGS[@]}"
    duo arena "${CONFIRM_FLAGS[@]}" --speed-only
    done_
    ;;
  frozen)
    setup
    say "seed 1 of duo-joint and duo-random"
    duo arena "${BASE[@]}" --entrants duo-joint:budget=0.5,duo-joint:budget=0.33,duo-random:budget=0.5,duo-random:budget=0.33 --seeds 2
    for b in 0.5 0.33; do
      J=$RUN/entrants/duo-joint_budget-$b-seed1 R=$RUN/entrants/duo-random_budget-$b-seed1/run
      flags=$(python - "$RUN" "$J" "$b" <<'PY'
import json, sys
from duollm.methods import load_entrant
from duollm.methods.joint import paper_router_flags
run, folder, b = sys.argv[1], sys.argv[2], sys.argv[3]
row = next(json.loads(l) for l in open(f"{run}/arena.jsonl") if json.loads(l)["label"] == f"duo-joint:budget={b}" and json.loads(l)["seed"] == 1)
joint = load_entrant(folder)
mix = paper_router_flags(joint, shares={k: row["stats"][k] for k in ("big", "small", "skip")})  # duo-joint's own mix
joint.options["skip"] = False  # and BIG and SMALL only at the same FFN FLOPs: the choices duo-random trained on
print(" ".join(mix) + "|" + " ".join(paper_router_flags(joint)))
PY
)
      for which in 1 2; do  # frozen-B: duo-joint's mix of BIG, SMALL and SKIP; frozen2-B: BIG and SMALL only
        name=$([ $which = 1 ] && echo "frozen-$b" || echo "frozen2-$b")
        f=$(echo "$flags" | cut -d'|' -f$which)
        say "paper router $name on the frozen base: $f"
        duo router train --run "$R" $f --name "$name" --json > "$RUN/$name-train.json"
        for split in prose-val code-val; do  # the arena's windows: the first EVAL_TOKENS / SEQ_LEN of the split
          src=(--data ".cache/corpus/$split.jsonl")
          [ "$PRESET" = arena ] || src=(--split "$split")
          duo router eval --run "$R" --name "$name" "${src[@]}" --seq-len "$SEQ_LEN" --seqs $((EVAL_TOKENS / SEQ_LEN)) \
            --pick first --json > "$RUN/$name-$split.json"
        done
      done
    done
    done_
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
    for f in "$RUN".part2.log "$RUN".part2s1.log "$RUN".frozen.log "$RUN".confirm.log; do [ -e "$f" ] && { echo "== $f"; tail -n 8 "$f"; }; done
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null || true
    if [ -n "${DEST:-}" ]; then
      mkdir -p "$DEST"  # one archive: a device call brings back at most eight files
      files=$(ls -d "$RUN"/arena.json "$RUN"/arena.jsonl "$RUN"/arena.png "$RUN"/frozen*.json "$RUN"*.log "$RUN"-124m/arena.* "$RUN"-time/arena.* "$RUN"-decode 2>/dev/null || true)
      [ -n "$files" ] && tar czf "$DEST/results.tar.gz" $files && echo "packed into $DEST/results.tar.gz: $(echo $files | wc -w) files"
    fi
    [ -e "$RUN/.done" ] && say "ended" || say "still running"
    ;;
  *)
    echo "unknown stage $STAGE (all, more, part2, part2-time, frozen, confirm, rest, chain, launch, wait; chain pieces: part2-train, part2-seed1, part2-pair, part2-speed, acm1, confirm-train, confirm-speed, decode, trainbench)" >&2
    exit 2
    ;;
esac
