#!/usr/bin/env bash
# Runs the pipeline as three separately started programs, consumers first (each waits
# until the stage before it sends), then waits for all three; removes the queues at the end.
#
#   run.sh [python|cpp] [ARGS FOR decode.py...]
#
# python (default): decode.py -> infer.py -> postprocess.py
# cpp:              decode.py -> hakobu_pipeline_infer (infer.cpp) -> postprocess.py,
#                   the C++ program taken from $HAKOBU_BUILD (default build/release)/examples/cpp
# $PYTHON is the interpreter (default python3); $FRAMES and $FEATURES name the queues
# (default frames, features); $HAKOBU_DOMAIN the domain; $RECORD, if set, is the JSON file
# postprocess.py writes its summary to. Exit status: 0 when every stage
# finished, else the first failing stage's status.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
variant="${1:-python}"
shift || true
python="${PYTHON:-python3}"
frames="${FRAMES:-frames}"
features="${FEATURES:-features}"
queues=(--frames "$frames" --features "$features")

case "$variant" in
  python) infer=("$python" "$here/infer.py" "${queues[@]}") ;;
  cpp) infer=("${HAKOBU_BUILD:-build/release}/examples/cpp/hakobu_pipeline_infer" "$frames" "$features" 4) ;;
  *) echo "usage: $0 [python|cpp] [ARGS FOR decode.py...]" >&2; exit 2 ;;
esac

# The queues go when the run ends, however it ends (the stages never remove them).
trap '"$python" -m hakobu rm "$frames" "$features" >/dev/null 2>&1 || true' EXIT

"$python" "$here/postprocess.py" "${queues[@]}" ${RECORD:+--record "$RECORD"} &
postprocess=$!
"${infer[@]}" &
infer_pid=$!
"$python" "$here/decode.py" "${queues[@]}" "$@"
decode_status=$?
wait "$infer_pid"
infer_status=$?
wait "$postprocess"
postprocess_status=$?
for status in "$decode_status" "$infer_status" "$postprocess_status"; do
  ((status == 0)) || exit "$status"
done
