#!/usr/bin/env bash
# venued for the 64-bit ARM box (aarch64-unknown-linux-gnu), built from this x86_64 host:
#   - installs, only when missing, the rustup target, the Debian cross linker
#     gcc-aarch64-linux-gnu (which also brings the arm64 C library) and qemu-user;
#   - builds the program as the box runs it (controller and agent, without the device
#     fakes; debug) for aarch64;
#   - checks the result is an AArch64 ELF and runs it under qemu-user (`--version`, and
#     `config defaults` read back by `config check`), so a binary that links but cannot start
#     on the box fails here.
# scripts/ci.sh runs it as its `aarch64` step (VENUED_AARCH64=0 skips it). A release build
# for the box: `scripts/cross-aarch64.sh --release`.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
cargo_profile=()
if [[ ${1:-} == --release ]]; then
    profile=release
    cargo_profile=(--release)
fi

target=aarch64-unknown-linux-gnu
if ! rustup target list --installed | grep -qx "$target"; then
    echo "    rustup target $target: missing, adding"
    rustup target add "$target"
fi

# shellcheck source=lib/apt.sh
source scripts/lib/apt.sh
if ! command -v aarch64-linux-gnu-gcc > /dev/null 2>&1; then
    echo "    gcc-aarch64-linux-gnu: missing, installing with apt"
    apt_install gcc-aarch64-linux-gnu libc6-dev-arm64-cross
fi
if ! command -v qemu-aarch64 > /dev/null 2>&1; then
    echo "    qemu-user: missing, installing with apt"
    apt_install qemu-user
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
# The appliance's feature set: controller and agent, without the device fakes.
cargo build --locked --target "$target" --bin venued --no-default-features \
    --features controller,agent "${cargo_profile[@]}"
bin="target/$target/$profile/venued"

machine=$(aarch64-linux-gnu-readelf -h "$bin" | sed -n 's/^ *Machine: *//p')
if [[ $machine != AArch64 ]]; then
    echo "cross-aarch64: $bin is for '$machine', not AArch64" >&2
    exit 1
fi
run=(qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin")
version=$("${run[@]}" --version)
# Defaults printed and read back, under emulation: the config parser and the embedded
# tz database work on the target.
defaults=$(mktemp)
trap 'rm -f "$defaults"' EXIT
"${run[@]}" config defaults > "$defaults"
"${run[@]}" config check "$defaults" > /dev/null
echo "    $bin: $(du -h "$bin" | cut -f1), AArch64, runs under qemu ($version)"
