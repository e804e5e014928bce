#!/usr/bin/env bash
# Run (or resume) a study and commit its results as they come in, so a session that ends
# mid-study loses at most the run in progress:
#   scripts/run_study_committing.sh studies/frontier.toml docs/study-frontier docs/study-frontier.md
set -uo pipefail
cd "$(dirname "$0")/.."
config=$1; shift
paths=("$@")
commit() {
  git add -- "${paths[@]}" 2>/dev/null
  git diff --cached --quiet -- "${paths[@]}" || \
    git commit -q -m "study results: $(basename "$config" .toml), $(($(wc -l < "${paths[0]}/runs.csv") - 1)) runs" -- "${paths[@]}"
}
.venv/bin/qtune study --config "$config" &
study=$!
while kill -0 "$study" 2>/dev/null; do
  sleep 120
  .venv/bin/qtune study --config "$config" --report-only >/dev/null 2>&1 || true
  commit
done
wait "$study"; status=$?
.venv/bin/qtune study --config "$config" --report-only >/dev/null 2>&1 || true
commit
exit $status
