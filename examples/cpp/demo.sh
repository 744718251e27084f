#!/usr/bin/env bash
# Runs the example consumer and producer as two separately started programs
# that find each other by queue name.  Usage: demo.sh [BUILD_DIR]
set -euo pipefail
build="${1:-build/release}"
queue="demo-frames-$$"
"$build/examples/cpp/hakobu_consumer" "$queue" &
consumer=$!
"$build/examples/cpp/hakobu_producer" "$queue" 200 480 640
wait "$consumer"
