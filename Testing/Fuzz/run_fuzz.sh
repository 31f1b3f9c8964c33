#!/usr/bin/env bash
# run_fuzz.sh <fuzz build folder> [seconds per target] [targets...]: runs each libFuzzer target
# for a bounded time on its corpus (new inputs kept in <build>/Testing/Fuzz/corpus/<target>,
# crashes written as <build>/Testing/Fuzz/<target>-crash-*), then prints executions and time.
# Build first: see Testing/Fuzz/CMakeLists.txt.
set -euo pipefail
build=${1:?usage: run_fuzz.sh <fuzz build folder> [seconds] [targets...]}
seconds=${2:-60}
shift $(( $# >= 2 ? 2 : 1 ))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_model_load fuzz_dataset_json fuzz_label_names)
here="$build/Testing/Fuzz"
source_dir="$(cd "$(dirname "$0")" && pwd)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
status=0
for t in "${targets[@]}"; do
  [ -x "$here/$t" ] || { echo "$t: not built in $here (skipped)"; continue; }
  case $t in
    fuzz_model_load) seeds=("$here/seeds/model"); options=(-dict="$source_dir/json.dict") ;;
    fuzz_dataset_json) seeds=("$source_dir/seeds/dataset"); options=(-dict="$source_dir/json.dict") ;;
    fuzz_label_names) seeds=("$source_dir/seeds/labels" "$here/seeds/real-labels"); options=() ;;
    *) seeds=(); options=() ;;
  esac
  mkdir -p "$here/corpus/$t"
  log="$here/$t.log"
  if "$here/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
      -artifact_prefix="$here/$t-" "${options[@]}" "$here/corpus/$t" "${seeds[@]}" > "$log" 2>&1; then
    result=ok
  else
    result="FAILED (see $log)"
    status=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  took=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' || echo "?")
  echo "$t: $result, $runs executions in ${took:-?} s, corpus $(ls "$here/corpus/$t" | wc -l) files"
done
exit $status
