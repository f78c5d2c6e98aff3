#!/usr/bin/env bash
# Install NaMaster (PyPI: pymaster) into the Python given as $1 (default: python3).
#
# pymaster is published as a source distribution only; it compiles against GSL, FFTW3 and
# CFITSIO and, left to itself, downloads and builds libchealpix from sourceforge (fails offline).
# This script:
#   1. does nothing when pymaster already imports;
#   2. installs the Debian/Ubuntu packages libgsl-dev libfftw3-dev libcfitsio-dev libchealpix-dev
#      when their headers are missing and apt-get is usable (as root, or through sudo -n);
#   3. with the system libchealpix present, builds pymaster from its sdist with the system
#      library in place of the download (offline-safe); otherwise `pip install pymaster`.
# Measured on a 2-core machine: ~8 s of apt-get, ~25 s to compile.
set -euo pipefail
PY=${1:-python3}
VERSION=${PYMASTER_VERSION:-3.0.1}      # the seeding of _deps below follows this version's setup.py

if "$PY" -c "import pymaster" 2>/dev/null; then
    echo "pymaster: already installed ($("$PY" -c 'import pymaster; print(pymaster.__file__)'))"
    exit 0
fi

PACKAGES="libgsl-dev libfftw3-dev libcfitsio-dev libchealpix-dev"
have_headers() {
    for h in /usr/include/gsl/gsl_math.h /usr/include/fftw3.h /usr/include/fitsio.h /usr/include/chealpix.h; do
        [ -e "$h" ] || return 1
    done
}
if ! have_headers && command -v apt-get >/dev/null; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
    if [ "$SUDO" != none ]; then
        echo "pymaster: installing $PACKAGES (apt-get)"
        $SUDO apt-get install -y -q $PACKAGES >/dev/null \
            || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q $PACKAGES >/dev/null; } \
            || echo "pymaster: apt-get could not install $PACKAGES"
    else
        echo "pymaster: headers missing and no root/sudo for apt-get; install $PACKAGES yourself"
    fi
fi

LIBCHEALPIX=$(ls /usr/lib/*/libchealpix.so /usr/lib/libchealpix.so 2>/dev/null | head -n 1 || true)
if [ -n "$LIBCHEALPIX" ] && [ -e /usr/include/chealpix.h ]; then
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    "$PY" -m pip download -q --no-deps --no-binary pymaster "pymaster==$VERSION" -d "$WORK"
    tar -xzf "$WORK/pymaster-$VERSION.tar.gz" -C "$WORK"
    SRC="$WORK/pymaster-$VERSION"
    mkdir -p "$SRC/_deps/lib" "$SRC/_deps/include" "$SRC/_deps/bin"
    # setup.py skips its chealpix download when _deps/lib/libchealpix.a exists and links that file
    # into the extension.  Debian's libchealpix.a is not position independent (cannot go into a
    # shared object), so the shared library goes in under that name: the linker reads the file's
    # contents, not its name, and the extension then loads the system libchealpix.so at run time.
    cp "$LIBCHEALPIX" "$SRC/_deps/lib/libchealpix.a"
    cp /usr/include/chealpix.h "$SRC/_deps/include/"
    echo "pymaster: compiling $VERSION against the system libchealpix ($LIBCHEALPIX)"
    "$PY" -m pip install -q "$SRC"
else
    echo "pymaster: no system libchealpix; pip install pymaster==$VERSION (downloads chealpix while building)"
    "$PY" -m pip install -q "pymaster==$VERSION"
fi
"$PY" -c "import pymaster; print('pymaster: installed', pymaster.__file__)"
