#!/usr/bin/env bash
# Builds the libFuzzer targets on the stable toolchain (sanitizer-coverage
# instrumentation through RUSTFLAGS; no nightly, no cargo-fuzz needed) and
# runs each for a while, keeping the corpus in fuzz/corpus/<target>.
#   fuzz/run.sh                 every target, 60 s each
#   fuzz/run.sh 600 codec       one target, 10 minutes
#   fuzz/run.sh build           build the targets only (CI)
# A crash is written to fuzz/artifacts/<target>/ and makes this script exit
# 1; turn it into a unit test beside the code it broke (see
# docs/robustness.md).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(codec handshake classify config relay)
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps the flags off build scripts and proc macros.
triple="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --bins --target "$triple"
[ "$secs" = "build" ] && exit 0
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "== $t: ${secs}s"
  # The relay reads packets up to and past the 64 KiB whole-packet limit.
  max_len=4096
  [ "$t" = relay ] && max_len=200000
  # -rss_limit_mb / -malloc_limit_mb: a length field that makes a parser
  # allocate more than 256 MiB counts as a crash.
  set +e
  "target/$triple/release/$t" "corpus/$t" -max_total_time="$secs" -max_len="$max_len" \
    -rss_limit_mb=512 -malloc_limit_mb=256 -artifact_prefix="artifacts/$t/" \
    -print_final_stats=1 > "artifacts/$t.log" 2>&1
  rc=$?
  set -e
  grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|INFO: Running)|panicked|Done [0-9]+ runs" "artifacts/$t.log" || true
  echo "corpus/$t: $(ls "corpus/$t" | wc -l) inputs"
  if [ "$rc" -ne 0 ]; then
    echo "!! $t found a crash (exit $rc): fuzz/artifacts/$t/, log fuzz/artifacts/$t.log"
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashes in: ${failed[*]}"
  exit 1
fi
