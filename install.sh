#!/bin/sh
# Install socket-snoop on Debian/Ubuntu, as root: a virtual environment under
# /opt/socket-snoop (Debian's pip refuses system-wide installs, PEP 668) and a
# link in /usr/local/bin, which sudo's PATH includes.
#   sudo ./install.sh            then    sudo socket-snoop
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prefix=${SOCKETSNOOP_PREFIX:-/opt/socket-snoop}
if [ "$(id -u)" != 0 ]; then echo "install.sh: run as root (sudo ./install.sh)" >&2; exit 1; fi
# procps: /bin/kill, which the service's ExecReload runs (a minimal Debian lacks it)
missing=""
for pkg in python3-venv libbpf1 procps; do
    # installed, not merely known: a removed package leaves "deinstall ok config-files", which dpkg -s accepts
    [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi
/usr/bin/python3 -m venv "$prefix"
# the package and its dependencies from PyPI: prometheus-client (--metrics) and rich (socket-snoop top)
"$prefix/bin/pip" install -q --upgrade "$here"
ln -sf "$prefix/bin/socket-snoop" /usr/local/bin/socket-snoop
echo "installed: /usr/local/bin/socket-snoop -> $prefix/bin/socket-snoop"
