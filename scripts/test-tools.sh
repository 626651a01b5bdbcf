#!/usr/bin/env bash
# Third-party clients the integration tests drive the MQTT broker with, installed only when
# missing (a second run does nothing):
#
#   mosquitto_sub / mosquitto_pub   Debian package mosquitto-clients (apt, needs root or sudo)
#   paho-mqtt 2.1 (Python)          a virtualenv in target/test-venv (PyPI, once)
#
# scripts/ci.sh runs this in its `tools` step. Run it yourself before `cargo nextest run`
# outside ci.sh; without these tools the tests that need them are skipped with a notice
# (and fail when CI is set).
set -euo pipefail
cd "$(dirname "$0")/.."

PAHO_VERSION=2.1.0

if command -v mosquitto_sub > /dev/null 2>&1 && command -v mosquitto_pub > /dev/null 2>&1; then
    echo "    mosquitto-clients: $(command -v mosquitto_sub)"
else
    echo "    mosquitto-clients: missing, installing with apt"
    sudo_cmd=()
    if [[ $(id -u) != 0 ]]; then
        sudo_cmd=(sudo -n)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends mosquitto-clients > /dev/null ||
        {
            "${sudo_cmd[@]}" apt-get update -q > /dev/null
            "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends mosquitto-clients > /dev/null
        }
fi

venv="$PWD/target/test-venv"
if [[ -x $venv/bin/python ]] &&
    "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('paho-mqtt') != '$PAHO_VERSION')" 2> /dev/null; then
    echo "    paho-mqtt: $PAHO_VERSION in ${venv#"$PWD/"}"
else
    echo "    paho-mqtt: missing, installing $PAHO_VERSION into ${venv#"$PWD/"}"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "paho-mqtt==$PAHO_VERSION"
fi
