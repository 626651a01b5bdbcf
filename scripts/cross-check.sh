#!/usr/bin/env bash
# The PC agent for Windows, checked from Linux (there is no Windows machine here):
#   - installs, only when missing, the rustup target x86_64-pc-windows-gnu and the MinGW
#     linker (Debian package gcc-mingw-w64-x86-64; apt needs root or sudo);
#   - clippy -D warnings on the agent-only build for Windows;
#   - builds venued.exe (agent only, debug) and checks with objdump -p that it imports
#     only DLLs every Windows 10/11 has (no MinGW runtime DLLs to ship).
# scripts/ci.sh runs it as its `windows` step. What still needs a real Windows PC is
# listed in docs/agent.md.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/apt.sh
source scripts/lib/apt.sh

target=x86_64-pc-windows-gnu
if ! rustup target list --installed | grep -qx "$target"; then
    echo "    rustup target $target: missing, adding"
    rustup target add "$target"
fi
if ! command -v x86_64-w64-mingw32-gcc > /dev/null 2>&1; then
    echo "    gcc-mingw-w64-x86-64: missing, installing with apt"
    apt_install gcc-mingw-w64-x86-64
fi

agent=(--locked --target "$target" --no-default-features --features agent)
cargo clippy "${agent[@]}" -- -D warnings
cargo build "${agent[@]}" --bin venued
exe="target/$target/debug/venued.exe"

# System DLLs only (case-insensitive): the Win32 core, networking, crypto for TLS and the
# C runtime every Windows ships (msvcrt), GDI for the overlay's frames, plus API-set
# forwarders.
allowed='^(kernel32|advapi32|userenv|ws2_32|bcrypt|bcryptprimitives|crypt32|ncrypt|secur32|ntdll|msvcrt|user32|gdi32|shell32|ole32|oleaut32|powrprof|wtsapi32|iphlpapi|api-ms-win-[a-z0-9-]+)\.dll$'
bad=$(x86_64-w64-mingw32-objdump -p "$exe" | sed -n 's/^\s*DLL Name: //p' | tr 'A-Z' 'a-z' | sort -u | grep -Ev "$allowed" || true)
if [[ -n $bad ]]; then
    echo "cross-check: $exe imports DLLs a Windows PC may not have:" >&2
    echo "$bad" >&2
    exit 1
fi
echo "    $exe: $(du -h "$exe" | cut -f1), imports only system DLLs"
