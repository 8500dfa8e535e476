#!/bin/sh
# Install socket-snoop on Debian/Ubuntu, as root: a virtual environment under
# /opt/socket-snoop (Debian's pip refuses system-wide installs, PEP 668) and a
# link in /usr/local/bin, which sudo's PATH includes; the man page, bash completion and an example config,
# each made by the installed socket-snoop from its option declarations (`socket-snoop config --man` ...).
#   sudo ./install.sh            then    sudo socket-snoop; man socket-snoop
# DESTDIR (as make's): a staging root for every file outside the virtual environment (the link, the man page,
# the completion, the example config); SOCKETSNOOP_PREFIX: the virtual environment (default /opt/socket-snoop).
set -eu
umask 022  # what is made here is for every user to read (the man page, completion), whatever root's umask
here=$(cd "$(dirname "$0")" && pwd)
prefix=${SOCKETSNOOP_PREFIX:-/opt/socket-snoop}
if [ "$(id -u)" != 0 ]; then echo "install.sh: run as root (sudo ./install.sh)" >&2; exit 1; fi
# procps: /bin/kill, which the service's ExecReload runs (a minimal Debian lacks it); gcc and libc6-dev: the
# report's compiled reader of text logs (setup.py; without them pip installs the rest, and the report is slower)
missing=""
for pkg in python3-venv libbpf1 procps gcc libc6-dev; do
    # installed, not merely known: a removed package leaves "deinstall ok config-files", which dpkg -s accepts
    [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi
/usr/bin/python3 -m venv "$prefix"
# the package and its dependencies from PyPI: prometheus-client (--metrics) and rich (socket-snoop top), with the
# fast-report extra (duckdb: report's fast path)
"$prefix/bin/pip" install -q --upgrade "$here[fast-report]"
dest=${DESTDIR:-}
directory() {  # made if missing; an existing one keeps its owner and mode (an admin's /etc/socket-snoop)
    [ -d "$1" ] || install -d -m 0755 "$1"
}
directory "$dest/usr/local/bin"
ln -sf "$prefix/bin/socket-snoop" "$dest/usr/local/bin/socket-snoop"
echo "installed: /usr/local/bin/socket-snoop -> $prefix/bin/socket-snoop"

# made-from-the-options files: written whole to a temporary file first, so a failure leaves the old one
made() {  # made TARGET MODE ARGS...: socket-snoop config ARGS > TARGET
    target=$1 mode=$2
    shift 2
    directory "$(dirname "$target")"
    "$prefix/bin/socket-snoop" config "$@" > "$target.new"
    chmod "$mode" "$target.new"
    mv -f "$target.new" "$target"
    echo "installed: ${target#"$dest"}"
}
# the man page where man looks for local ones; mandb for whatis and apropos (man finds the page without it)
made "$dest/usr/local/share/man/man1/socket-snoop.1" 0644 --man
if [ -z "$dest" ] && command -v mandb >/dev/null 2>&1; then mandb -q 2>/dev/null || true; fi
# bash completion: the directory bash-completion reads for what the admin installs (loaded by new shells)
made "$dest/etc/bash_completion.d/socket-snoop" 0644 --bash-completion
# the example config beside the admin's, which is never written (the monitor reads config.toml only)
made "$dest/etc/socket-snoop/config.toml.example" 0644 --example
if [ ! -e "$dest/etc/socket-snoop/config.toml" ]; then
    echo "  (to configure: cp /etc/socket-snoop/config.toml.example /etc/socket-snoop/config.toml, then edit)"
fi
