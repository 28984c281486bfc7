#!/usr/bin/env bash
# Fuzz every parser the network reaches, bounded in time (see docs/security.md, "Fuzzing").
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Installs cargo-fuzz if missing, builds all targets in fuzz/ once (nightly, libFuzzer, address
# sanitizer, optimized with debug assertions), then runs each target for SECONDS_PER_TARGET
# (default 60) over a scratch copy of its committed corpus fuzz/corpus/<target>/ (the tree stays
# clean). Prints the executions per target and fails if any target crashed, leaked, ran out of
# memory (-rss_limit_mb) or took too long on one input (-timeout); the input that did it is kept
# under fuzz/artifacts/<target>/ and its path is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
rss_mb=${FUZZ_RSS_LIMIT_MB:-2048}
timeout_s=${FUZZ_TIMEOUT:-10}

# cargo-fuzz needs unstable rustc flags (-Zsanitizer, coverage): the nightly toolchain if there
# is one, else the installed toolchain with RUSTC_BOOTSTRAP=1.
if cargo +nightly --version >/dev/null 2>&1; then
  toolchain=(+nightly)
else
  toolchain=()
  export RUSTC_BOOTSTRAP=1
  echo "fuzz: no nightly toolchain; using $(rustc --version) with RUSTC_BOOTSTRAP=1"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

build_start=$(date +%s)
cargo "${toolchain[@]}" fuzz build -O -a
echo "fuzz: built all targets in $(($(date +%s) - build_start)) s"

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
fi
bin_dir=fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "fuzz/artifacts/$t"
  if [ -d "fuzz/corpus/$t" ]; then
    cp -R "fuzz/corpus/$t/." "$work/$t/"
  fi
  args=(-max_total_time="$secs" -rss_limit_mb="$rss_mb" -timeout="$timeout_s"
    -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/")
  case $t in
    checkin_plist | command_report | mobileconfig | machine_info) args+=(-dict=fuzz/dict/plist.dict) ;;
  esac
  echo "fuzz: $t for ${secs} s"
  log=$work/$t.log
  if "$bin_dir/$t" "${args[@]}" "$work/$t" >"$log" 2>&1; then
    status=ok
  else
    status=CRASHED
    failed+=("$t")
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1 || true)
  summary+=("$(printf '%-16s %-8s %12s runs  %s' "$t" "$status" "${runs:-?}" "$done_line")")
  if [ "$status" != ok ]; then
    echo "fuzz: $t failed; the end of its log:" >&2
    grep -vE '^#[0-9]+' "$log" | tail -n 40 >&2
    grep -E 'Test unit written to|artifact_prefix' "$log" >&2 || true
  fi
done

echo
echo "fuzz: summary (${secs} s per target)"
printf '%s\n' "${summary[@]}"
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
