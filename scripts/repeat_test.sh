#!/usr/bin/env bash
# Run one pytest test N times in a row and stop at the first failure: the evidence that a
# multi-process test is trusted (COMMON rule: 50 passes in a row under load).
#
#   scripts/repeat_test.sh N TEST_ID [extra pytest args...]
#   LOAD=1 scripts/repeat_test.sh 50 tests/test_losses.py::test_two_gloo_ranks_match_one_process_on_the_whole_batch
#
# LOAD=1 keeps every core busy meanwhile (one `while True: pass` per core, stopped on exit),
# so a rank that is slower than its peer, the usual trigger of shutdown races, is the normal
# case. PYTHON picks the interpreter (default: the project's .venv, else python3). Each run
# is a fresh pytest process; the log of a failing run is printed. Exit status 0 only after N
# passes.
set -u
if [ $# -lt 2 ]; then
    sed -n '2,12p' "$0" >&2
    exit 2
fi
runs=$1
test_id=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
default_python=python3
[ -x "$root/.venv/bin/python" ] && default_python="$root/.venv/bin/python"
python=${PYTHON:-$default_python}
log=$(mktemp)
spinners=()

finish() {
    for pid in "${spinners[@]}"; do
        kill "$pid" 2>/dev/null
    done
    wait "${spinners[@]}" 2>/dev/null
    rm -f "$log"
}
trap finish EXIT
trap 'exit 130' INT TERM

if [ "${LOAD:-0}" = 1 ]; then
    for _ in $(seq "$(nproc)"); do
        "$python" -c "while True: pass" &
        spinners+=($!)
    done
fi

cd "$root" || exit 2
start=$(date +%s)
for i in $(seq "$runs"); do
    if ! "$python" -m pytest -q -x -p no:cacheprovider "$test_id" "$@" >"$log" 2>&1; then
        echo "$test_id: FAILED on run $i after $((i - 1)) passes" >&2
        tail -n 60 "$log" >&2
        exit 1
    fi
    echo "run $i/$runs passed ($(( $(date +%s) - start )) s)"
done
load_note=""
[ "${LOAD:-0}" = 1 ] && load_note=" under load ($(nproc) busy loops)"
echo "$test_id: $runs/$runs passed$load_note in $(( $(date +%s) - start )) s"
