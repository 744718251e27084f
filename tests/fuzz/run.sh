#!/bin/sh
# Runs the fuzz targets for a bounded time each, as CI does (ctest runs it per target):
#   1. replays every input of tests/fuzz/regressions/<target>/ (each once: all must pass);
#   2. fuzzes for SECONDS, starting from tests/fuzz/corpus/<target>/ (read-only) and
#      a scratch corpus under the build directory that keeps growing between runs.
# Crashes, leaks and timeouts are saved in BUILD/artifacts/<target>/.
#
# Usage: tests/fuzz/run.sh [-b BUILD_DIR] [-t SECONDS] [-j JOBS] [TARGET...]
#   BUILD_DIR  where the fuzz binaries are (default: build/fuzz/tests/fuzz)
#   SECONDS    fuzzing time per target (default: 30; 0 replays the regressions only)
#   JOBS       targets run at the same time (default: 1); each target's lines are printed
#              together when it ends, in the order of the targets
#   TARGET     default: all six. Extra libFuzzer flags: FUZZ_FLAGS="-jobs=2 ...".
set -u
here=$(cd "$(dirname "$0")" && pwd)
build="$here/../../build/fuzz/tests/fuzz"
seconds=30
jobs=1
while getopts b:t:j: opt; do
  case $opt in
    b) build=$OPTARG ;;
    t) seconds=$OPTARG ;;
    j) jobs=$OPTARG ;;
    *) sed -n '2,15p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
targets=${*:-"fuzz_array_header fuzz_block fuzz_queue_attach fuzz_registry_attach fuzz_store fuzz_topic"}

# Several targets at a time: this script once per target (JOBS at a time), each one's
# output kept in BUILD/artifacts/<target>/run.out and printed in the targets' order.
if [ "$jobs" -gt 1 ]; then
  for target in $targets; do
    mkdir -p "$build/artifacts/$target" && rm -f "$build/artifacts/$target/run.status"
  done
  # shellcheck disable=SC2086 # targets is a word list
  printf '%s\n' $targets | xargs -P "$jobs" -I '{}' \
    sh -c 'sh "$0" -b "$1" -t "$2" "$3" >"$1/artifacts/$3/run.out" 2>&1; echo $? >"$1/artifacts/$3/run.status"' \
    "$0" "$build" "$seconds" '{}'
  status=0
  for target in $targets; do
    cat "$build/artifacts/$target/run.out"
    [ "$(cat "$build/artifacts/$target/run.status" 2>/dev/null)" = 0 ] || status=1
  done
  exit $status
fi
flags="-timeout=10 -rss_limit_mb=4096"
status=0

# A target that crashed could not remove its domain (fz<pid>...): remove those of dead processes.
clean_shm() {
  for file in /dev/shm/hakobu:fz*; do
    [ -e "$file" ] || continue
    pid=$(basename "$file" | sed -E 's/^hakobu:fz([0-9]+).*/\1/')
    kill -0 "$pid" 2>/dev/null || rm -f "$file"
  done
}

for target in $targets; do
  bin="$build/$target"
  if [ ! -x "$bin" ]; then
    echo "run.sh: $bin is missing: cmake --preset fuzz && cmake --build --preset fuzz" >&2
    exit 2
  fi
  artifacts="$build/artifacts/$target"
  work="$build/corpus/$target"
  mkdir -p "$artifacts" "$work"

  # 1. Regressions: inputs that once crashed or hung.
  failed=0
  replayed=0
  for input in "$here/regressions/$target"/*; do
    [ -f "$input" ] || continue
    replayed=$((replayed + 1))
    log="$artifacts/replay-$(basename "$input").log"
    if ! "$bin" $flags "$input" >"$log" 2>&1; then
      echo "FAIL $target: regression $(basename "$input") (log: $log)"
      grep -E "ERROR|SUMMARY|#[0-5] |ALARM|deadly" "$log" | head -12
      failed=$((failed + 1))
    fi
  done
  echo "$target: $replayed regression input(s) replayed, $failed failed"
  [ "$failed" -eq 0 ] || status=1

  # 2. Fuzzing for a bounded time.
  [ "$seconds" -gt 0 ] || continue
  log="$artifacts/fuzz.log"
  # shellcheck disable=SC2086 # flags are word lists
  if "$bin" $flags ${FUZZ_FLAGS:-} -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$work" "$here/corpus/$target" >"$log" 2>&1; then
    echo "$target: fuzzed ${seconds}s: $(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1)"
  else
    echo "FAIL $target: fuzzing found a problem (log: $log; inputs in $artifacts/)"
    grep -E "ERROR|SUMMARY|#[0-5] |ALARM|deadly|Test unit written" "$log" | head -16
    status=1
  fi
  clean_shm
done
exit $status
