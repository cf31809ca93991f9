#!/usr/bin/env bash
# Stage the small files of every finished cell of the CPU study (summary, metrics, predictions, config, logs,
# search.json; never weights), so another machine resumes the study from what is committed:
#   bash runs/commit-cells.sh && git commit -m "CPU study: cells completed so far"
# Unfinished and interrupted cells are left out: their checkpoints hold tensors that are not committed.
set -euo pipefail
cd "$(dirname "$0")/.."
for root in runs/reproduce-cpu runs/reproduce-cpu-search; do
  [ -d "$root" ] || continue
  find "$root" -name summary.json -print0 | while IFS= read -r -d '' summary; do
    dir=$(dirname "$summary")
    # an interrupted cell resumes from checkpoint tensors that are not committed: leave it to this machine
    grep -q '"status": "interrupted"' "$summary" && continue
    git add -- "$dir"
  done
  find "$root" \( -name search.json -o -name multirun.yaml -o -name COMMAND.txt \) -print0 | xargs -0 -r git add --
  [ -d "$root/aggregate" ] && git add -- "$root/aggregate"
done
git status --short -- runs | grep -c '^A' || true
