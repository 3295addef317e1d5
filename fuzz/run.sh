#!/usr/bin/env bash
# Builds every fuzz target once, then runs each for a bounded time.
#
#   bash fuzz/run.sh [seconds-per-target [target...]]     (default: 30 s, every target)
#
# Exits non-zero if any target crashes (a panic, a failed assertion, a sanitizer report, a
# timeout or running out of memory), after printing the path of the input that did it.
#
# Seeds are read from fuzz/corpus/<target>/ and never written to; what a run discovers goes to
# target/fuzz/corpus/<target>/ and is kept there for the next run. Crashing inputs go to
# fuzz/artifacts/<target>/ (ignored by git). One target/ tree: the build lands in
# target/fuzz/ of the repository.
set -euo pipefail

seconds=${1:-30}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: $0 [seconds-per-target [target...]]" >&2
  exit 2
fi
shift $(($# > 0 ? 1 : 0))

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR="$root/target/fuzz"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# cargo-fuzz needs nightly-only flags. Without a nightly toolchain, stable is told to accept
# them; AddressSanitizer works on both. GRANTKEEPER_FUZZ_TOOLCHAIN=stable picks stable anyway.
toolchain=${GRANTKEEPER_FUZZ_TOOLCHAIN:-auto}
if [ "$toolchain" != stable ] && rustup run nightly rustc --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz)
  echo "toolchain: $(rustup run nightly rustc --version)"
else
  fuzz=(cargo fuzz)
  export RUSTC_BOOTSTRAP=1
  echo "toolchain: $(rustc --version) with RUSTC_BOOTSTRAP=1"
fi
sanitizer=${GRANTKEEPER_FUZZ_SANITIZER:-address}
# Release with debug assertions and overflow checks; the same flags for build and run, so that
# run does not build again.
flags=(--fuzz-dir fuzz -O -a --sanitizer "$sanitizer")

targets=$("${fuzz[@]}" list --fuzz-dir fuzz)
if [ $# -gt 0 ]; then
  for target in "$@"; do
    if ! grep -qx "$target" <<<"$targets"; then
      echo "no fuzz target $target; there are: $(echo "$targets" | tr '\n' ' ')" >&2
      exit 2
    fi
  done
  targets=$(printf '%s\n' "$@")
fi
echo "building every target"
"${fuzz[@]}" build "${flags[@]}"

logs="$CARGO_TARGET_DIR/logs"
mkdir -p "$logs"
failed=()
summary=()
for target in $targets; do
  seeds="fuzz/corpus/$target"
  corpus="$CARGO_TARGET_DIR/corpus/$target"
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  log="$logs/$target.log"
  echo "== $target: ${seconds}s" "(log: $log)"
  # The first corpus directory receives new inputs; the seeds are only read.
  status=0
  "${fuzz[@]}" run "${flags[@]}" "$target" "$corpus" "$seeds" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
  summary+=("$(printf '%-20s %10s execs %8s exec/s  cov %6s  exit %s' \
    "$target" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$status")")
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    echo "!! $target failed (exit $status); last lines of $log:"
    tail -n 40 "$log"
    inputs=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log")
    if [ -n "$inputs" ]; then
      for input in $inputs; do
        [[ $input == /* ]] || input="$root/${input#./}"
        echo "!! crashing input: $input"
        echo "!!   reproduce: ${fuzz[*]} run ${flags[*]} $target $input"
      done
    else
      echo "!! no input was written; see $log"
    fi
  fi
done

echo
echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "no crash"
