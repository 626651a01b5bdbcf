# Sourced by the scripts that install Debian packages the tests and cross builds need.

# apt_install PACKAGE...: install with apt-get, as root or through passwordless sudo;
# refresh the package lists once if the first attempt fails (a fresh machine has none).
apt_install() {
    local sudo_cmd=()
    if [[ $(id -u) != 0 ]]; then
        sudo_cmd=(sudo -n)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "$@" > /dev/null ||
        {
            "${sudo_cmd[@]}" apt-get update -q > /dev/null
            "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "$@" > /dev/null
        }
}
