# Sourced by the install-*-tools.sh scripts: Debian packages, each only when missing.

# Whether a Debian package is installed.
installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# Installs the packages named (none: nothing to do), as root or with sudo. Waits for another
# apt-get (another install script) rather than failing on its lock, and refreshes the package
# lists only when the install cannot find what it needs.
apt_install() {
    (($#)) || return 0
    local sudo=""
    if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    local apt=($sudo apt-get -o DPkg::Lock::Timeout=600)
    "${apt[@]}" install -y --no-install-recommends "$@" || {
        "${apt[@]}" update
        "${apt[@]}" install -y --no-install-recommends "$@"
    }
}
