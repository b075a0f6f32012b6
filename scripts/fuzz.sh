#!/usr/bin/env bash
# Property-based fuzzing of every parser of untrusted input, a million cases each
# (PROPTEST_CASES overrides it): session ids, node specs, envelopes (random and
# mutated), every codec's decoder (random and mutated values), the stored-bytes
# layers (random and mutated blobs), and the web layer's cookie parsing and
# signature checks. The test suite runs the same properties with a few hundred to a
# few thousand cases. Release build: about three minutes on two cores
# (PROPTEST_CASES=1000 for a quick check). Each run selects its tests by a name
# filter; a filter that matches no test fails the script instead of silently
# leaving its parser unfuzzed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES="${PROPTEST_CASES:-1000000}"
echo "== $PROPTEST_CASES cases per property"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run() {
    echo "== $*"
    cargo test --release --locked "$@" -- --test-threads 2 | tee "$log"
    # Tests run, from the harness's `test result: ok. N passed; M failed; ...` lines.
    local ran
    ran=$(awk '/^test result:/ {
        for (i = 2; i <= NF; i++) if ($i ~ /^(passed|failed);$/) n += $(i - 1)
    } END { print n + 0 }' "$log")
    if [ "$ran" -eq 0 ]; then
        echo "fuzz.sh: no test ran for \`cargo test $*\`: the filter matches none" >&2
        exit 1
    fi
}
run -p tandem-core --lib arbitrary_strings_round_trip_or_are_rejected
run -p tandem-core --lib arbitrary_specs_never_panic
run -p tandem-core --lib envelope::tests
run -p tandem-codec --test codecs random_bytes_never_panic_a_decoder
run -p tandem-codec --test codecs mutated
run -p tandem-codec --test layers random_bytes_never_panic_a_layer
run -p tandem-codec --test layers mutated_blobs
run -p tandem-tower --lib arbitrary_cookie_headers_parse_without_panicking
run -p tandem-tower --lib forged_and_tampered_values_never_verify
