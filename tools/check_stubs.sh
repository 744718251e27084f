#!/usr/bin/env bash
# Checks that python/hakobu/_core.pyi (committed, read by mypy and people) is
# the stub the build generates from the bindings (nanobind's stubgen, see
# bindings/python/CMakeLists.txt): builds hakobu._core and its stub in
# build/stubs, then diffs the two. On a difference it prints the diff and the
# command that refreshes the committed copy, and fails.
#
#   tools/check_stubs.sh            # check
#   tools/check_stubs.sh --update   # copy the generated stub over the committed one
#
# PYTHON names the interpreter (default: python3); it needs nanobind (the
# version pinned in pyproject.toml's build-system: another version may print
# the stub differently) and numpy.
set -euo pipefail
cd "$(dirname "$0")/.."

python="$(command -v "${PYTHON:-python3}")"
build="${HAKOBU_STUB_BUILD_DIR:-build/stubs}"
committed=python/hakobu/_core.pyi
generated="$build/bindings/python/_core.pyi"

echo "stubs: nanobind $("$python" -c 'import nanobind; print(nanobind.__version__)') ($python)"
# Debug: the stub does not depend on optimization, and -O0 builds fastest.
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DHAKOBU_WERROR=ON -DHAKOBU_BUILD_PYTHON=ON \
  -DHAKOBU_BUILD_TESTS=OFF -DHAKOBU_BUILD_BENCH=OFF -DHAKOBU_BUILD_EXAMPLES=OFF \
  -DPython_EXECUTABLE="$python" >/dev/null
cmake --build "$build" --target _core_stub -j "${HAKOBU_STUB_JOBS:-2}"

if [[ "${1:-}" == "--update" ]]; then
  cp "$generated" "$committed"
  echo "stubs: $committed updated from $generated"
  exit 0
fi
if ! diff -u --label "$committed (committed)" --label "$generated (generated)" "$committed" "$generated"; then
  cat >&2 <<MSG

stubs: $committed differs from the stub generated from the bindings (diff above).
Refresh it with:  PYTHON=$python tools/check_stubs.sh --update   (then commit it)
MSG
  exit 1
fi
echo "stubs: $committed equals the generated stub"
