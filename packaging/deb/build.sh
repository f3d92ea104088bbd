#!/usr/bin/env bash
# Build the kube-audit-shipper .deb from this checkout.
#
#   packaging/deb/build.sh [--out DIR] [--python PATH] [--wheelhouse DIR] [--revision N] [--compress-level N]
#
# The package holds its own virtual environment under /opt/kube-audit-shipper (the agent and its
# dependencies from PyPI, compiled wheels included, so it is built per architecture), bound to the
# system interpreter given by --python (default /usr/bin/python3.11; the package depends on that
# interpreter's Debian package). It also installs the systemd unit, the default config as a
# conffile under /etc/kube-audit-shipper/, and a maintainer script that creates the system user.
#
#   --out DIR          where the .deb is written (default: dist/ in the checkout); its path is printed last
#   --python PATH      the Debian interpreter the venv is built with and bound to (must be a
#                      /usr/bin/pythonX.Y of a Debian package: dpkg -S finds its package for Depends)
#   --wheelhouse DIR   install from the wheels in DIR only (pip --no-index), for builds without a
#                      package index. Fill it where there is one, with the same interpreter:
#                        python3.11 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' >req.txt
#                        python3.11 -m pip download -d DIR -r req.txt 'setuptools>=68' wheel
#   --revision N       Debian revision (default 1): the version is <agent version>-N
#   --compress-level N xz level for dpkg-deb (default 6)
#
# Needs: dpkg-deb, the interpreter with its venv module (python3.11-venv), and pip access to the
# dependencies (an index or --wheelhouse). Runs as any user: file ownership in the package is root
# (dpkg-deb --root-owner-group), the user and directories are made by postinst.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="$repo/dist"
python="/usr/bin/python3.11"
wheelhouse=""
revision="1"
level="6"

while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --python) python="$2"; shift 2 ;;
        --wheelhouse) wheelhouse="$2"; shift 2 ;;
        --revision) revision="$2"; shift 2 ;;
        --compress-level) level="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

name="kube-audit-shipper"
prefix="/opt/$name"

[ -x "$python" ] || { echo "build.sh: interpreter $python not found (install python3.11 and python3.11-venv, or pass --python)" >&2; exit 1; }
case "$python" in
    /usr/bin/python3.*) ;;
    *) echo "build.sh: --python must be a Debian interpreter /usr/bin/python3.X (the package depends on it), not $python" >&2; exit 2 ;;
esac
python_pkg="$(dpkg -S "$(readlink -f "$python")" 2>/dev/null | head -n1 | cut -d: -f1)"
[ -n "$python_pkg" ] || { echo "build.sh: $python belongs to no Debian package" >&2; exit 1; }
# The venv needs the whole standard library, not only pythonX.Y-minimal.
python_pkg="${python_pkg%-minimal}"
pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

version="$("$python" - "$repo/kube_audit_shipper/__init__.py" <<'EOF'
import re, sys
print(re.search(r'^__version__ = "([^"]+)"', open(sys.argv[1]).read(), re.M).group(1))
EOF
)"
arch="$(dpkg --print-architecture)"
deb_version="$version-$revision"

work="$(mktemp -d "${TMPDIR:-/tmp}/kas-deb.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"
venv="$root$prefix"
mkdir -p "$root" "$out"

# 1. The source, copied so that the build leaves nothing (build/, *.egg-info) in the checkout.
mkdir -p "$work/src"
cp "$repo/pyproject.toml" "$repo/README.md" "$work/src/"
cp -r "$repo/kube_audit_shipper" "$work/src/kube_audit_shipper"
find "$work/src" -name __pycache__ -type d -prune -exec rm -rf {} +

# 2. The virtual environment, built where it will live relative to the package root.
"$python" -m venv "$venv"
pip_args=(--disable-pip-version-check --no-input --no-compile --quiet)
if [ -n "$wheelhouse" ]; then
    pip_args+=(--no-index --find-links "$wheelhouse")
fi
"$venv/bin/python" -m pip install "${pip_args[@]}" "$work/src"
# The venv is managed by dpkg: no pip in it (nothing to upgrade it behind dpkg's back).
"$venv/bin/python" -m pip uninstall --disable-pip-version-check --quiet --yes pip setuptools
rm -f "$venv"/bin/activate* "$venv"/bin/Activate.ps1
# pip records the temporary source directory it installed from (PEP 610): not true on the target.
for d in "$venv"/lib/python*/site-packages/kube_audit_shipper-*.dist-info; do
    rm -f "$d/direct_url.json"
    sed -i '/direct_url\.json/d' "$d/RECORD"
done

# 3. Relocate: the scripts' shebangs and pyvenv.cfg name the build path; make them name $prefix.
for f in "$venv"/bin/* "$venv/pyvenv.cfg"; do
    if [ -f "$f" ] && [ ! -L "$f" ] && grep -qF "$root" "$f"; then
        sed -i "s|$root$prefix|$prefix|g" "$f"
    fi
done
# Bytecode, compiled once for the final paths (tracebacks name /opt/...), checked by source hash so
# it stays valid whatever mtimes dpkg restores; the read-only /opt at run time never needs a write.
find "$venv" -name __pycache__ -type d -prune -exec rm -rf {} +
"$python" -m compileall -q -j 0 --invalidation-mode checked-hash -s "$root" -p / "$venv/lib" >/dev/null
if grep -rlF "$work" "$venv" >/dev/null 2>&1; then
    echo "build.sh: a build path ($work) is still named in:" >&2
    grep -rlF "$work" "$venv" >&2
    exit 1
fi

# 4. Files around the venv.
install -D -m 0644 "$repo/systemd/$name.service" "$root/usr/lib/systemd/system/$name.service"
install -D -m 0644 "$repo/config/default.yaml" "$root/etc/$name/config.yaml"
install -D -m 0600 "$here/environment" "$root/etc/$name/environment"
mkdir -p "$root/usr/bin"
ln -s "$prefix/bin/$name" "$root/usr/bin/$name"
doc="$root/usr/share/doc/$name"
install -D -m 0644 "$repo/README.md" "$doc/README.md"
install -D -m 0644 "$here/copyright" "$doc/copyright"
install -D -m 0644 "$repo/config/example.yaml" "$doc/examples/config.yaml"
install -D -m 0644 "$repo/config/policy/audit-policy.yaml" "$doc/examples/audit-policy.yaml"

# 5. Control files.
mkdir -p "$root/DEBIAN"
installed_size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
sed -e "s/@VERSION@/$deb_version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$installed_size/" \
    -e "s/@PYTHON_PKG@/$python_pkg/" -e "s/@PYVER@/$pyver/" "$here/control.in" >"$root/DEBIAN/control"
install -m 0644 "$here/conffiles" "$root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$here/$script" "$root/DEBIAN/$script"
done
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

deb="$out/${name}_${deb_version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz -z"$level" --build "$root" "$deb" >/dev/null
echo "$deb"
