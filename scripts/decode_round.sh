#!/usr/bin/env bash
# The speed measurements of issue-sized rounds on one GPU (docs/speed.md, docs/benchmarks.md), as named steps; each
# step writes into DEST (default $OUT) and is cut by `timeout` so that the later ones still run. Run it in the
# background and collect DEST with repeated calls, as scripts/arena_round.sh's `wait` does (its `decode` piece):
#
#   bash scripts/decode_round.sh [DEST]                        # every step, in the order below (about 30 minutes)
#   STEPS="train14 spec view" bash scripts/decode_round.sh     # these steps, in this order
#   SKIP="tuned view" bash scripts/decode_round.sh             # every step but these
#
# check    the GPU parity tests of the decode kernel and of the one-row step (a kernel that does not build on this
#          GPU shows there, not as a benchmark cut short);
# gemv     bench_gemv: each matrix of a paper-1.4b layer and the head, one row through cuBLAS, compiled, one-row;
# b1       bench_decode at paper-1.4b (random weights, bf16), batch 1: all-BIG, the static route 4/12 and the
#          per-token route random 4/12 (masked, the decode kernel, its tiled path), in graphs, fused and compiled
#          (`hbm`: the share of 4.8 TB/s a step's bytes reach) and with every matrix product through the one-row
#          kernels (--one-row), and at most ONE_ROW_MIN elements (default 8M) kept on F.linear (+one-row-min); profiles
#          of one batch-1 step, eager and fused + compiled, static and per-token;
# b64      the same at batch 8 and 64 (no one-row, no profile);
# tuned    all-BIG at batch 1 compiled with coordinate-descent tuning as well (--tune: slow to compile);
# view     batch 1, 8, 64 with SMALL as a view of BIG (--small-view), where masked is one pass over BIG;
# ffn      bench_ffn at paper-1.4b, 16k and 64k tokens: the routed FFN against the dense one, with the host's count
#          read (sorted) and without (counted: what training with exact counts runs), profiled at 16k;
# train14  bench_train at paper-1.4b (batch 8 × 1024, compiled, 20 steps): dense against exact counts, profiled;
# train124 bench_train at gpt2-124m (60 steps): dense, random routes, exact counts, profiled;
# spec     a Duo model trained for speculation (the arena preset, duo-random:budget=0.5, 39.3M tokens, about 90 s;
#          `spectrain` alone, kept on the machine for a later call), then scripts/speculate_sweep.py --fast on it, one
#          process per draft of SPEC_DRAFTS (SpeculativeDecoder against Decoder all-BIG, both recorded and
#          fused; each part of a round timed), and for one draft transformers' assisted generation (--hf);
# tests    the GPU tests of the decoder and of recorded speculation (compilations take minutes: last).
# The corpus comes from .cache/corpus.tar.xz (carried) for `spec`. For a shorter lease: B1_POLICIES (the fast policies of
# b1), B1_PROFILE= (b1 without profiles), TRAIN124_CASES (bench_train's --cases at gpt2-124m), ONE_ROW_MIN.
set -uo pipefail
DEST=${1:-${OUT:?give DEST or set OUT}}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # scripts/*.py import duollm from this checkout
mkdir -p "$DEST"
say() { echo "[$(date +%T)] $*" | tee -a "$DEST/round.log"; }
step() { local t=$1; shift; say "$*"; timeout "$t" "$@" >> "$DEST/round.log" 2>&1 || say "exit $? (timeout $t s): $*"; }
DECODE=(python -m benchmarks.bench_decode --preset paper-1.4b --ks 4 --eager-batches '' --hf-batches '')

check() { step 240 python -m pytest -q -m gpu tests/kernels/test_triton_decode.py tests/model/test_decode.py -k "equals_reference or one_row"; }
gemv() { step 120 python -m benchmarks.bench_gemv --preset paper-1.4b --out "$DEST/gemv.jsonl"; }
b1() {
  step 480 "${DECODE[@]}" --batches 1 --ffn-kernels masked,decode,decode-tiled \
    --fast-policies "${B1_POLICIES:-all-big,4/12 big,random 4/12 [decode],random 4/12 [decode-tiled]}" \
    --one-row --one-row-min "${ONE_ROW_MIN:-8000000}" ${B1_PROFILE---profile} --out "$DEST/decode-b1.jsonl"
}
b64() { step 300 "${DECODE[@]}" --batches 8,64 --fast-policies "all-big,4/12 big,random 4/12 [decode]" --out "$DEST/decode.jsonl"; }
tuned() { step 240 "${DECODE[@]}" --batches 1 --fast-policies "all-big" --tune --out "$DEST/decode-tuned.jsonl"; }
view() {
  step 240 "${DECODE[@]}" --batches 1,8,64 --fast-policies '' --ffn-kernels masked,decode --small-view \
    --out "$DEST/decode-view.jsonl"
}
ffn() { step 150 python -m benchmarks.bench_ffn --preset paper-1.4b --tokens 16384,65536 --iters 10 --profile --out "$DEST/ffn.jsonl"; }
train14() {
  step 300 python -m benchmarks.bench_train --preset paper-1.4b --steps 20 --train.batch_size=8 --train.grad_accum=1 \
    --train.log_every=5 --train.compile=true --cases "dense=1,0,0;exact=0.5,0.5,0,exact" --profile --out-jsonl "$DEST/train-1.4b.jsonl"
}
train124() {
  step 300 python -m benchmarks.bench_train --preset gpt2-124m --steps 60 --train.log_every=10 --train.compile=true \
    --cases "${TRAIN124_CASES:-dense=1,0,0;random=0.5,0.5,0;exact=0.5,0.5,0,exact}" --profile --out-jsonl "$DEST/train.jsonl"
}
spectrain() {
  if [ ! -e .cache/corpus/MANIFEST.json ] && [ -e .cache/corpus.tar.xz ]; then
    step 60 python -m duollm data build --from-archive .cache/corpus.tar.xz
  fi
  ls -d runs/spec/entrants/duo-random*/run > /dev/null 2>&1 \
    || step 180 python -m duollm arena --out runs/spec --preset arena --entrants duo-random:budget=0.5 --eval-tokens 65536
}
spec() {
  spectrain
  local run d
  run=$(ls -d runs/spec/entrants/duo-random*/run 2>/dev/null | head -1)
  [ -n "$run" ] || { say "no trained model for spec"; return; }
  for d in ${SPEC_DRAFTS:-all-small BBSSSSBB S-S-S-S- BBBBBB.. BBBB....}; do  # one process each: a failure costs one draft
    step 100 python scripts/speculate_sweep.py "$run" --fast --drafts "$d" --ks 2,4 --prompts 8 --new 64
  done
  step 90 python scripts/speculate_sweep.py "$run" --fast --drafts BBSSSSBB --ks 4 --prompts 4 --new 64 --hf
}
tests() { step 300 python -m pytest -q -m gpu tests/model/test_decode.py tests/model/test_speculate.py; }

python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee -a "$DEST/round.log"
for s in ${STEPS:-check gemv b1 b64 tuned view ffn train14 train124 spec tests}; do
  [[ " ${SKIP:-} " == *" $s "* ]] && continue
  case $s in
    check | gemv | b1 | b64 | tuned | view | ffn | train14 | train124 | spectrain | spec | tests) "$s" ;;
    *) say "unknown step $s (check gemv b1 b64 tuned view ffn train14 train124 spectrain spec tests)"; exit 2 ;;
  esac
done
say "done"
