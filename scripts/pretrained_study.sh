#!/usr/bin/env bash
# The SmolLM2 study of docs/pretrained.md on one GPU, in one command (about 6 minutes on an H200):
#
#   OUT=out bash scripts/pretrained_study.sh
#
# 1. three imports of SmolLM2-135M-Instruct, one per way of making SMALL (slice, distill, adapt; d_small 384);
# 2. all-BIG perplexity against transformers' own, on the whole of prose-val;
# 3. the table: every import x all-big, all-small, random:0.5, FFN-SkipLLM and early exit, on prose-val and code-val
#    (whole splits, windows of 512), ppl and FLOPs per token;
# 4. on the adapted model: the shared oracle at 30 layers (groups of 3 layers: 10 units, exhaustive over them; and a
#    beam of width 8 over single layers), fixed and random best-of-20, the paper router at half the layers BIG.
# Everything small lands in $OUT; the runs stay in $RUNS (git-ignored). The GGUF file must be where
# `duollm import --pretrained smollm2-135m` finds it (installed, cached in .cache/pretrained/, or fetchable).
set -euo pipefail
OUT=${OUT:-docs/study/pretrained/h200}
RUNS=${RUNS:-runs/smol}
mkdir -p "$OUT"
duo() { python -m duollm "$@"; }
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0)) s] $*" >&2; }

for small in slice distill adapt; do
  [ -f "$RUNS-$small/pretrained.json" ] || duo import --pretrained smollm2-135m --out "$RUNS-$small" --small "$small" --json > "$OUT/import-$small.json"
  stamp "import $small"
done
python scripts/pretrained_parity.py "$RUNS-slice" --split prose-val > "$OUT/parity.json"
stamp parity
POLICIES=all-big,all-small,random:0.5,skipllm:0.97,skipllm:0.95,skipllm:0.9,exit:0.9,exit:0.7,exit:0.5
python scripts/pretrained_table.py "$RUNS-slice" "$RUNS-distill" "$RUNS-adapt" --policies "$POLICIES" \
  --splits prose-val,code-val --max-tokens 0 --out "$OUT/table.jsonl" > "$OUT/table.md"
stamp table
R=$RUNS-adapt
duo oracle --run "$R" --groups 3 --budgets 15,free --mode shared --random 20 --seqs 32 --seq-len 256 --batch-size 8 \
  --out "$R/oracle/groups3" --json > "$OUT/oracle-groups3.json"
stamp "oracle groups 3"
duo router train --run "$R" --kind paper --budget 0.5 --steps 300 --seq-len 256 --json > "$OUT/router-paper.json"
duo router eval --run "$R" --name paper-0.5 --oracle "$R/oracle/groups3" --json > "$OUT/router-paper-eval.json"
stamp router
duo oracle --run "$R" --beam 8 --budgets 15 --mode shared --random 0 --seqs 32 --seq-len 256 --batch-size 4 \
  --out "$R/oracle/beam8" --json > "$OUT/oracle-beam8.json"
stamp "oracle beam 8"
