#!/usr/bin/env bash
# The SmolLM2 study of docs/pretrained.md on one GPU (about 6 minutes on an H200 for the first round):
#
#   OUT=out bash scripts/pretrained_study.sh                 # the first round: steps 1-4 below
#   OUT=out bash scripts/pretrained_study.sh claims          # the second round: steps 5-6
#   OUT=out bash scripts/pretrained_study.sh policies        # the third: steps 7-8
#
# 1. three imports of SmolLM2-135M-Instruct, one per way of making SMALL (slice, distill, adapt; d_small 384);
# 2. all-BIG perplexity against transformers' own, on the whole of prose-val;
# 3. the table: every import x all-big, all-small, random:0.5, FFN-SkipLLM and early exit, on prose-val and code-val
#    (whole splits, windows of 512), ppl and FLOPs per token;
# 4. on the adapted model: the shared oracle at 30 layers (groups of 3 layers: 10 units, exhaustive over them; and a
#    beam of width 8 over single layers), fixed and random best-of-20, the paper router at half the layers BIG.
# 5. (claims) on the adapted model, the oracle over groups of 3 at every reachable count (shared) and the causal oracle
#    at 9, 15 and 21 BIG layers, with fixed and random best-of-20; the label-free bound there; the paper router at
#    0.3, 0.5, 0.7, calibrated on prose; `duollm claims` on the run;
# 6. (claims) the beam oracle of width 8 over single layers at 15 (cut after 90 s);
# 7. (policies) adapt × all-big, all-small, random, FFN-SkipLLM thresholds, late early exits and static skip routes at
#    comparable FLOPs, whole prose-val and code-val;
# 8. (policies) three chat prompts under all-big, all-small, the best fixed route at 15 BIG and FFN-SkipLLM at the
#    threshold that skips closest to a quarter of the FFNs on prose-val.
# Everything small lands in $OUT; the runs stay in $RUNS (git-ignored). The GGUF file must be where
# `duollm import --pretrained smollm2-135m` finds it (installed, cached in .cache/pretrained/, or fetchable).
set -euo pipefail
STAGE=${1:-first}
OUT=${OUT:-docs/study/pretrained/h200}
RUNS=${RUNS:-runs/smol}
mkdir -p "$OUT"
duo() { python -m duollm "$@"; }
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0)) s] $*" >&2; }
R=$RUNS-adapt

if [ "$STAGE" = claims ]; then
  [ -f "$R/pretrained.json" ] || duo import --pretrained smollm2-135m --out "$R" --small adapt --json > "$OUT/import-adapt-2.json"
  stamp "import adapt"
  duo oracle --run "$R" --groups 3 --mode causal --causal-budgets 9,15,21 --random 20 --random-budgets 9,15,21 \
    --seqs 32 --seq-len 256 --batch-size 8 --causal-batch-size 32 --json > "$OUT/oracle-groups3-causal.json"
  cp "$R/oracle/big-small/summary.json" "$OUT/oracle-groups3-causal-summary.json"
  cp "$R/oracle/big-small/tokens.jsonl.gz" "$OUT/oracle-groups3-tokens.jsonl.gz"  # per-token routes: claim 3 off the machine
  stamp "oracle groups 3, causal"
  python scripts/label_free.py "$R" --groups 3 --budgets 9,15,21 --seqs 32 --seq-len 256 --batch-size 8 --json \
    --out "$R/label-free-prose-val.jsonl" > "$OUT/label-free-groups3.jsonl"
  stamp "label-free"
  for b in 0.5 0.3 0.7; do
    duo router train --run "$R" --kind paper --budget "$b" --steps 300 --seq-len 256 --json > "$OUT/router-paper-$b.json"
    duo router calibrate --run "$R" --name "paper-$b" --data prose --seqs 64 --seq-len 256 --json > "$OUT/router-paper-$b-cal.json"
    duo router eval --run "$R" --name "paper-$b-cal-prose" --json > "$OUT/router-paper-$b-eval.json"
    duo claims --run "$R" --json > "$OUT/claims.json"  # after each router, so that a lease cut short keeps the verdicts
    duo claims --run "$R" > "$OUT/claims.md"
    stamp "router $b, claims"
  done
  timeout 90 python -m duollm oracle --run "$R" --beam 8 --budgets 15 --mode shared --random 0 --seqs 32 --seq-len 256 \
    --batch-size 8 --out "$R/oracle/beam8" --json > "$OUT/oracle-beam8.json" || echo "beam oracle cut at 90 s" >&2
  stamp "oracle beam 8"
  exit 0
fi

if [ "$STAGE" = policies ]; then
  [ -f "$R/pretrained.json" ] || duo import --pretrained smollm2-135m --out "$R" --small adapt --json > "$OUT/import-adapt-3.json"
  FIXED=BBBSSSSSSSSSBBBSSSSSSBBBBBBBBB  # the best fixed route at 15 of 30 BIG (oracle-groups3.json)
  python scripts/pretrained_table.py "$R" --policies "all-big,all-small,random:0.5,random:0.75,$FIXED" \
    --policy skipllm:0.98 --policy skipllm:0.982 --policy skipllm:0.984 --policy skipllm:0.986 --policy skipllm:0.99 \
    --policy exit:0.9,from=24 --policy exit:0.95,from=20,every=2 --policy exit:0.99,from=16,every=2 \
    --policy BBBBBBBBBBBBBBBBBB--------BBBB --policy BBBBBBBBBBBBBBBBBBBBBB----BBBB \
    --splits prose-val,code-val --max-tokens 0 --out "$OUT/policies.jsonl" > "$OUT/policies.md"
  stamp policies
  T=$(python - "$OUT/policies.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"prose-val"' in l and '"skipllm:' in l]
share = lambda r: (1 - r["flops_per_token"] / r["flops_all_big"])  # of all forward FLOPs; FFNs are 159.2 of 286.7 M
print(min(rows, key=lambda r: abs(share(r) * 286.7 / 159.2 - 0.25))["policy"])
PY
)
  for p in all-big all-small "$FIXED" "$T"; do
    for q in "What is the capital of France?" "Write one sentence about the sea." "What is 7 times 8?"; do
      duo generate --run "$R" --chat "$q" --policy "$p" --max-new-tokens 30 --json >> "$OUT/chat-adapt.jsonl"
    done
  done
  stamp chat
  exit 0
fi

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
