#!/usr/bin/env bash
# The decode measurements of docs/speed.md ("Decoding") on one GPU, in one command; each step
# writes into DEST (default $OUT) and is cut by `timeout` so that the later ones still run (about 15 minutes in all: run it
# in the background and collect DEST with repeated calls, as scripts/arena_round.sh's `wait` does):
#
#   bash scripts/decode_round.sh [DEST]
#
# 0. bench_gemv: each matrix of a paper-1.4b layer and the head, one row through cuBLAS, compiled, and the one-row kernels;
# 1. bench_decode at paper-1.4b (random weights, bf16), batch 1, then 8 and 64: all-BIG, the static route 4/12 and
#    the per-token route random 4/12 through the masked path and the decode kernel (at batch 1 also its tiled path,
#    decode-tiled, against the one-row kernels), all-BIG, the static route and the per-token route also fused and
#    compiled (`hbm`: the share of 4.8 TB/s a step's bytes reach), at batch 1 also with every matrix product through
#    the one-row kernels (--one-row); and profiles of one batch-1 step, eager and fused +
#    compiled, static and per-token (the kernels and where their time goes);
# 2. all-BIG at batch 1 compiled with coordinate-descent tuning as well (--tune: slow to compile, so on its own);
# 3. the same as 1 with SMALL as a view of BIG (--small-view), where masked is one pass over BIG;
# 4. a Duo model trained for speculation (the arena preset, duo-random:budget=0.5, 39.3M tokens, about 80 s), then
#    scripts/speculate_sweep.py --fast on it: SpeculativeDecoder against Decoder all-BIG, both recorded and fused;
#    and for one draft, transformers' assisted generation with the same draft (--hf);
# 5. the GPU parity tests of the decode kernel, the fused and compiled decoder, and recorded speculation (last: their
#    compilations take minutes, and a cut here loses no measurement).
# The corpus comes from .cache/corpus.tar.xz (carried) for step 4. Before step 1, the decode kernel's GPU parity test
# alone, and the one-row step's (a kernel that does not build on this GPU shows there, not as a benchmark cut short).
# SKIP="tuned view" (names: gemv b1 b64 tuned view spec tests) leaves steps out, for a lease that has less time.
set -uo pipefail
DEST=${1:-${OUT:?give DEST or set OUT}}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # scripts/*.py import duollm from this checkout
mkdir -p "$DEST"
say() { echo "[$(date +%T)] $*" | tee -a "$DEST/round.log"; }
step() { local t=$1; shift; say "$*"; timeout "$t" "$@" >> "$DEST/round.log" 2>&1 || say "exit $? (timeout $t s): $*"; }
want() { [[ " ${SKIP:-} " != *" $1 "* ]]; }
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" | tee -a "$DEST/round.log"
step 240 python -m pytest -q -m gpu tests/kernels/test_triton_decode.py tests/model/test_decode.py -k "equals_reference or one_row"
want gemv && step 120 python -m benchmarks.bench_gemv --preset paper-1.4b --out "$DEST/gemv.jsonl"
want b1 && step 480 python -m benchmarks.bench_decode --preset paper-1.4b --batches 1 --ks 4 --eager-batches '' --hf-batches '' \
  --ffn-kernels masked,decode,decode-tiled --fast-policies "all-big,4/12 big,random 4/12 [decode],random 4/12 [decode-tiled]" \
  --one-row --profile --out "$DEST/decode-b1.jsonl"
want b64 && step 300 python -m benchmarks.bench_decode --preset paper-1.4b --batches 8,64 --ks 4 --eager-batches '' --hf-batches '' \
  --fast-policies "all-big,4/12 big,random 4/12 [decode]" --out "$DEST/decode.jsonl"
want tuned && step 240 python -m benchmarks.bench_decode --preset paper-1.4b --batches 1 --ks 4 --eager-batches '' --hf-batches '' \
  --fast-policies "all-big" --tune --out "$DEST/decode-tuned.jsonl"
want view && step 240 python -m benchmarks.bench_decode --preset paper-1.4b --batches 1,8,64 --ks 4 --eager-batches '' --hf-batches '' \
  --fast-policies "random 4/12 [masked],random 4/12 [decode]" --small-view --out "$DEST/decode-view.jsonl"
if [ ! -e .cache/corpus/MANIFEST.json ] && [ -e .cache/corpus.tar.xz ]; then
  step 60 python -m duollm data build --from-archive .cache/corpus.tar.xz
fi
want spec && step 150 python -m duollm arena --out runs/spec --preset arena --entrants duo-random:budget=0.5 --eval-tokens 65536
RUN=$(ls -d runs/spec/entrants/duo-random*/run 2>/dev/null | head -1)
[ -n "$RUN" ] && want spec && step 150 python scripts/speculate_sweep.py "$RUN" --fast --drafts all-small,BBSSSSBB,S-S-S-S-,BBBBBB..,BBBB.... --ks 2,4 \
  --prompts 8 --new 64
[ -n "$RUN" ] && want spec && step 90 python scripts/speculate_sweep.py "$RUN" --fast --drafts BBSSSSBB --ks 4 --prompts 4 --new 64 --hf
want tests && step 300 python -m pytest -q -m gpu tests/model/test_decode.py tests/model/test_speculate.py
say "done"
