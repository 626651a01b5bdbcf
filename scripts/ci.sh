#!/usr/bin/env bash
# venued: the project's one test command. Run it from anywhere as
#
#     ./scripts/ci.sh
#
# It needs a Rust stable toolchain installed with rustup (Debian 12 and newer). It runs
# non-interactively, as any user including root, and installs only the tools that are missing:
# cargo-nextest, cargo-deny, the rustfmt and clippy components, and (scripts/test-tools.sh)
# the MQTT clients the broker tests use: mosquitto-clients (apt) and paho-mqtt (PyPI, into
# target/test-venv). Installing cargo-deny from
# source takes about 3 minutes on a 2-core machine, once.
#
# Steps, in order; the first failing step stops the run:
#   tools     make sure cargo-nextest, cargo-deny, rustfmt, clippy, mosquitto-clients,
#             paho-mqtt, and for the overlay tests Xvfb, tesseract, DejaVu fonts and
#             xdotool are available
#   fmt       cargo fmt --all -- --check
#   clippy    cargo clippy --all-targets --locked -- -D warnings
#   agent     cargo check --no-default-features --features agent (the agent-only build)
#   windows   ./scripts/cross-check.sh: the agent for x86_64-pc-windows-gnu (clippy
#             -D warnings, venued.exe, only system DLLs imported); adds the rustup target
#             and the MinGW linker (apt) when missing
#   aarch64   ./scripts/cross-aarch64.sh: the whole program for aarch64-unknown-linux-gnu
#             (the ARM box), run under qemu-user; adds the rustup target, the cross gcc and
#             qemu-user (apt) when missing (about 2.5 minutes, 1 minute more the first time)
#   test      cargo nextest run --locked --no-fail-fast   (plus --profile ci when CI=true)
#   doctest   cargo test --doc --locked                   (only if src/lib.rs exists;
#                                                          nextest does not run doc tests)
#   deny      cargo deny --all-features check bans licenses sources
#   fuzz      ./scripts/fuzz-api.sh: schemathesis fuzzes the running server from its own
#             OpenAPI document and fails on any 5xx (bounded: 25 cases per operation and
#             phase, at most 2 minutes; about 25 s, plus about 30 s the first time to
#             install schemathesis from PyPI into target/fuzz-venv)
#
# Environment:
#   CI=true          use the `ci` nextest profile (.config/nextest.toml) and CARGO_TERM_COLOR=never.
#   VENUED_WINDOWS=0 skip the Windows cross-check (it needs the rustup target and apt once).
#   VENUED_AARCH64=0 skip the aarch64 cross build (it needs the rustup target and apt once).
#   VENUED_FUZZ=0    skip the fuzz step (it needs PyPI once, to install schemathesis).
#   VENUED_FUZZ=1    a deeper fuzz step: 100 cases per operation and phase, up to 10 minutes
#                    (about 70 s).
#   VENUED_SLOW=1    also run the slow tests, which are marked #[ignore]:
#                        cargo nextest run --locked --run-ignored ignored-only
#   VENUED_BENCH=1   also run the benchmarks (the engine, the API on the real binary, the
#                    MQTT broker against Mosquitto when it is installed, the PC agent
#                    with its overlay under Xvfb, and 200 console stations expiring
#                    together against plug and router fakes):
#                        cargo bench --bench engine --bench api --bench mqtt --bench agent \
#                            --bench consoles
#
# At the end a summary table gives the status and duration (seconds) of every step.
# Exit status: 0 if every step passed, otherwise the exit status of the failing step.

set -euo pipefail

cd "$(dirname "$0")/.."

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
}

if [[ $# -gt 0 ]]; then
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "ci.sh: unexpected argument: $1 (see ./scripts/ci.sh --help)" >&2
            exit 2
            ;;
    esac
fi

is_ci=false
case "${CI:-}" in
    "" | 0 | false | FALSE | False | no) ;;
    *) is_ci=true ;;
esac
if [[ $is_ci == true ]]; then
    export CARGO_TERM_COLOR=never
fi

# A non-login shell (CI runners, `ssh host ./scripts/ci.sh`) may not have cargo's bin
# directory on PATH; `cargo install` puts tools there.
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if [[ -d $cargo_bin && ":$PATH:" != *":$cargo_bin:"* ]]; then
    export PATH="$cargo_bin:$PATH"
fi

if ! command -v cargo > /dev/null 2>&1; then
    echo "ci.sh: cargo not found; install the Rust stable toolchain with rustup first" >&2
    exit 127
fi

nextest_profile=()
rustfmt_color=()
if [[ $is_ci == true ]]; then
    nextest_profile=(--profile ci)
    # rustfmt ignores CARGO_TERM_COLOR and colours its diff even into a pipe.
    rustfmt_color=(--color never)
fi

# ---------------------------------------------------------------------------------------------
# Step bookkeeping

step_names=()
step_status=()
step_secs=()

now_us() {
    # EPOCHREALTIME is "seconds.microseconds" (the separator follows the locale).
    local t=${EPOCHREALTIME/[.,]/}
    echo "$t"
}

fmt_secs() {
    local us=$1
    printf '%d.%d' $((us / 1000000)) $((us % 1000000 / 100000))
}

summary() {
    local rc=$?
    local i total=0
    echo
    echo "==> summary"
    printf '    %-10s %-8s %8s\n' step status seconds
    printf '    %-10s %-8s %8s\n' ---------- -------- --------
    for i in "${!step_names[@]}"; do
        if [[ ${step_secs[i]} == - ]]; then
            printf '    %-10s %-8s %8s\n' "${step_names[i]}" "${step_status[i]}" -
        else
            printf '    %-10s %-8s %8s\n' "${step_names[i]}" "${step_status[i]}" "$(fmt_secs "${step_secs[i]}")"
            total=$((total + step_secs[i]))
        fi
    done
    printf '    %-10s %-8s %8s\n' ---------- -------- --------
    if [[ $rc -eq 0 ]]; then
        printf '    %-10s %-8s %8s\n' total ok "$(fmt_secs "$total")"
    else
        printf '    %-10s %-8s %8s\n' total "FAILED" "$(fmt_secs "$total")"
        echo "ci.sh: failed (exit status $rc)" >&2
    fi
}
trap summary EXIT

# run_step NAME COMMAND [ARGS...]: announce, run and time one step; stop the run if it fails.
# The command runs in a subshell with errexit on, so a shell function fails at its first
# failing command (errexit would be ignored if the call were part of an `||` list).
run_step() {
    local name=$1
    shift
    echo
    echo "==> $name: $*"
    local start end rc
    start=$(now_us)
    set +e
    (
        set -euo pipefail
        "$@"
    )
    rc=$?
    set -e
    end=$(now_us)
    step_names+=("$name")
    step_secs+=($((end - start)))
    if [[ $rc -eq 0 ]]; then
        step_status+=(ok)
    else
        step_status+=(FAILED)
        echo "==> $name: FAILED (exit status $rc)" >&2
        exit "$rc"
    fi
}

# skip_step NAME REASON: record a step that was not run.
skip_step() {
    echo
    echo "==> $1: skipped ($2)"
    step_names+=("$1")
    step_status+=(skipped)
    step_secs+=(-)
}

# ---------------------------------------------------------------------------------------------
# Tools: install only what is missing, so a second run does nothing here.

ensure_tools() {
    if cargo nextest --version > /dev/null 2>&1; then
        echo "    cargo-nextest: $(cargo nextest --version 2> /dev/null | head -n 1)"
    else
        echo "    cargo-nextest: missing, installing"
        cargo install --locked cargo-nextest
    fi

    if cargo deny --version > /dev/null 2>&1; then
        echo "    cargo-deny: $(cargo deny --version 2> /dev/null | head -n 1)"
    else
        echo "    cargo-deny: missing, installing (about 3 minutes)"
        cargo install --locked cargo-deny
    fi

    local component cmd
    for component in rustfmt clippy; do
        case $component in
            rustfmt) cmd=fmt ;;
            clippy) cmd=clippy ;;
        esac
        if cargo "$cmd" --version > /dev/null 2>&1; then
            echo "    $component: $(cargo "$cmd" --version 2> /dev/null | head -n 1)"
        elif command -v rustup > /dev/null 2>&1; then
            echo "    $component: missing, installing"
            rustup component add "$component"
        else
            echo "ci.sh: $component is missing and rustup is not available to install it" >&2
            return 1
        fi
    done

    # Tools we did not write that the tests drive the product with: MQTT clients, and a
    # virtual X server, OCR and a font for the overlay (scripts/test-tools.sh).
    ./scripts/test-tools.sh
}

# ---------------------------------------------------------------------------------------------
# The run

run_step tools ensure_tools
run_step fmt cargo fmt --all -- --check "${rustfmt_color[@]}"
run_step clippy cargo clippy --all-targets --locked -- -D warnings
# The PC agent must keep building without the controller's Unix-only parts...
run_step agent cargo check --locked --no-default-features --features agent
# ... and for Windows: clippy, venued.exe, and its DLL imports (scripts/cross-check.sh).
if [[ ${VENUED_WINDOWS:-1} == 0 ]]; then
    skip_step windows "VENUED_WINDOWS=0"
else
    run_step windows ./scripts/cross-check.sh
fi
# ... and the whole program for the ARM box, started under qemu (scripts/cross-aarch64.sh).
if [[ ${VENUED_AARCH64:-1} == 0 ]]; then
    skip_step aarch64 "VENUED_AARCH64=0"
else
    run_step aarch64 ./scripts/cross-aarch64.sh
fi
run_step test cargo nextest run --locked --no-fail-fast "${nextest_profile[@]}"

if [[ -f src/lib.rs ]]; then
    run_step doctest cargo test --doc --locked
else
    skip_step doctest "no src/lib.rs"
fi

# Advisories are skipped on purpose: `cargo deny check advisories` must fetch the RustSec
# advisory database from GitHub, which this network cannot reach. Run it where there is
# network access: cargo deny check advisories
run_step deny cargo deny --all-features check bans licenses sources

# The API under an OpenAPI-driven fuzzer: no request may get a 5xx (issue 4).
case ${VENUED_FUZZ:-} in
    0) skip_step fuzz "VENUED_FUZZ=0" ;;
    1) run_step fuzz env FUZZ_MAX_EXAMPLES=100 FUZZ_TIMEOUT=600 ./scripts/fuzz-api.sh ;;
    *) run_step fuzz env FUZZ_MAX_EXAMPLES=25 FUZZ_TIMEOUT=120 ./scripts/fuzz-api.sh ;;
esac

if [[ ${VENUED_SLOW:-0} == 1 ]]; then
    # --no-tests=warn: a tree with no #[ignore]d tests yet is not a failure.
    run_step slow cargo nextest run --locked --no-fail-fast "${nextest_profile[@]}" \
        --run-ignored ignored-only --no-tests=warn
else
    skip_step slow "set VENUED_SLOW=1 to run the #[ignore]d slow tests"
fi

if [[ ${VENUED_BENCH:-0} == 1 ]]; then
    run_step bench cargo bench --locked --bench engine --bench api --bench mqtt --bench agent \
        --bench consoles
else
    skip_step bench "set VENUED_BENCH=1 to run the benchmarks"
fi
