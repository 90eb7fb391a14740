#!/usr/bin/env bash
# Self-speculation on the pretrained Duo model on one GPU (docs/benchmarks.md, "Self-speculation on the pretrained
# Duo model"): SmolLM2-135M-Instruct imported from its GGUF with SMALL a view of BIG, then scripts/speculate_sweep.py
# --fast on it (SpeculativeDecoder against Decoder all-BIG, both recorded and fused, bf16), and once against
# transformers' assisted generation (--hf). The GPU machine has no network: the GGUF (98 MB, from
# `duollm import --pretrained smollm2-135m` on a machine that has one) and the pure-Python `gguf` package that
# transformers reads it with travel as ignored files, the GGUF in parts over consecutive calls:
#
#   bash scripts/smol_spec.sh pack          # here: .cache/smol/part-aa, part-ab (50 MB each) and .cache/pylib/gguf
#   (call 1 carries .cache/smol/part-aa and .cache/pylib; call 2 carries .cache/smol/part-ab, on the still-warm machine)
#   bash scripts/smol_spec.sh run [DEST]    # there: join, import, sweep; the output into DEST (default $OUT)
set -uo pipefail
GGUF=.cache/pretrained/SmolLM2-135M-Instruct.Q4_1.gguf
case "${1:-run}" in
  pack)
    mkdir -p .cache/smol .cache/pylib
    [ -e "$GGUF" ] || python -m duollm import --pretrained smollm2-135m --out runs/smol-view --small-view
    split -b 50M "$GGUF" .cache/smol/part-
    cp -r "$(python -c 'import gguf, os; print(os.path.dirname(gguf.__file__))')" .cache/pylib/
    sha256sum "$GGUF" | cut -d' ' -f1 > .cache/smol/sha256
    ls -la .cache/smol .cache/pylib
    ;;
  run)
    DEST=${2:-${OUT:?give DEST or set OUT}}
    mkdir -p "$DEST"
    export PYTHONPATH=$PWD:$PWD/.cache/pylib${PYTHONPATH:+:$PYTHONPATH}
    cat .cache/smol/part-* > .cache/smol.gguf
    [ ! -e .cache/smol/sha256 ] || [ "$(sha256sum .cache/smol.gguf | cut -d' ' -f1)" = "$(cat .cache/smol/sha256)" ] \
      || { echo "the joined GGUF does not match its checksum: a part is missing" >&2; exit 2; }
    if [ ! -e runs/smol-spec/config.json ]; then  # imported by an earlier call on this machine: kept
      python -m duollm import --gguf .cache/smol.gguf --out runs/smol-spec --small-view > "$DEST/import.log" 2>&1 \
        || { tail -5 "$DEST/import.log"; exit 1; }
    fi
    B12=BBBBBBBBBBBB
    drafts="$B12${B12}BBBB..,$B12${B12}B.....,${B12}SSS${B12}BBB,${B12}SSSSSS$B12,${B12}------$B12"
    timeout 400 python scripts/speculate_sweep.py runs/smol-spec --fast --drafts "$drafts" --ks 2,4 --prompts 8 --new 64 \
      > "$DEST/smol-sweep.txt" 2>&1 || echo "sweep: exit $?"
    timeout 150 python scripts/speculate_sweep.py runs/smol-spec --fast --drafts "${B12}SSS${B12}BBB" --ks 2 --prompts 4 \
      --new 64 --hf > "$DEST/smol-hf.txt" 2>&1 || echo "hf: exit $?"
    tail -n 20 "$DEST/smol-sweep.txt" "$DEST/smol-hf.txt"
    ;;
  *) echo "smol_spec.sh pack | run [DEST]" >&2; exit 2 ;;
esac
