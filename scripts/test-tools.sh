#!/usr/bin/env bash
# Third-party tools the integration tests drive the product with, installed only when
# missing (a second run does nothing):
#
#   mosquitto_sub / mosquitto_pub   Debian package mosquitto-clients (apt, needs root or sudo)
#   Xvfb, tesseract, DejaVu, xdotool Debian packages xvfb, tesseract-ocr(-eng),
#                                   fonts-dejavu-core, xdotool (apt)
#   paho-mqtt 2.1 (Python)          a virtualenv in target/test-venv (PyPI, once)
#
# scripts/ci.sh runs this in its `tools` step. Run it yourself before `cargo nextest run`
# outside ci.sh; without these tools the tests that need them are skipped with a notice
# (and fail when CI is set).
set -euo pipefail
cd "$(dirname "$0")/.."

PAHO_VERSION=2.1.0

# shellcheck source=lib/apt.sh
source scripts/lib/apt.sh

# apt_need <package> <test...>: install the Debian package unless the test passes.
apt_need() {
    local package=$1
    shift
    if "$@" > /dev/null 2>&1; then
        echo "    $package: present"
        return
    fi
    echo "    $package: missing, installing with apt"
    apt_install "$package"
}

apt_need mosquitto-clients command -v mosquitto_sub
# The agent's lock screen and overlay under a virtual X server, read back with OCR
# (tests/it/overlay.rs), drawn with DejaVu Sans; xdotool types a member login.
apt_need xvfb command -v Xvfb
apt_need tesseract-ocr command -v tesseract
apt_need tesseract-ocr-eng test -e /usr/share/tesseract-ocr/5/tessdata/eng.traineddata
apt_need fonts-dejavu-core test -e /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf
apt_need xdotool command -v xdotool

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
