#!/usr/bin/env bash
# Move the pins: try the newest release of every dependency (core and every extra), run the whole suite on
# them, and only when it passes rewrite constraints.txt with exactly the versions it passed on.
#
#   bash scripts/update_pins.sh            # from the repository root, on the 2-core CPU machine (~7 min)
#
# It works in a fresh clone of HEAD in a temporary folder with a fresh venv, so neither .venv nor uncommitted
# files are involved. On a failure it prints the failing tests and leaves constraints.txt as it is: then
# either fix the code for the new release, or give pyproject.toml an upper bound below it (a known break),
# and run this again. Commit constraints.txt with the versions it wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone -q . "$tmp/repo"
cd "$tmp/repo"
python3 -m venv .venv
. .venv/bin/activate
# torch stays at the CPU build this machine holds (a newer torch from the registry is a CUDA build of GBs)
pip install -q torch==2.13.0 -e '.[dev,analysis,hf,harness,pretrained]'
if ! python -m pytest -q -p no:cacheprovider; then
  echo "update_pins: the suite fails on the newest versions; constraints.txt is unchanged" >&2
  exit 1
fi
{
  sed -n '/^#/p' "$root/constraints.txt"  # the header, kept
  pip freeze --exclude-editable | grep -v '^duollm' | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/' | sort -f
} > "$tmp/constraints.txt"
mv "$tmp/constraints.txt" "$root/constraints.txt"
echo "update_pins: the suite passes; constraints.txt now pins $(grep -vc '^#' "$root/constraints.txt") packages (git diff constraints.txt)"
