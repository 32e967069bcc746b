#!/usr/bin/env bash
# The builds users and packagers make, beyond the test command's own
# (RelWithDebInfo, the ASan build, Release in hack/image.sh): Debug,
# MinSizeRel, and Release with a Debian package's usual flags
# (dpkg-buildflags: -O2, _FORTIFY_SOURCE=2, stack protector, format-security,
# relro). Each must build the binaries with no warning at all (PK_WERROR=ON
# here; a user's build has warnings on but not fatal).
#
#   tests/builds.sh [WORK_DIR]      (default: a temporary directory, removed)
set -euo pipefail
cd "$(dirname "$0")/.."
hack/deps.sh
work=${1:-}
if [ -z "$work" ]; then
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
fi
command -v dpkg-buildflags >/dev/null || { echo "builds: dpkg-buildflags not found (dpkg-dev)" >&2; exit 1; }

one() { # name, cmake args...
	local name=$1 t0=$SECONDS
	shift
	if ! cmake -S . -B "$work/$name" -DPK_TESTS=OFF -DPK_WERROR=ON "$@" >"$work/$name.log" 2>&1 ||
		! cmake --build "$work/$name" -j"$(nproc)" --target piko piko-controller piko-client piko-client-static \
			>>"$work/$name.log" 2>&1; then
		echo "builds: $name FAILED:" >&2
		grep -E 'error|warning' "$work/$name.log" | head -n 20 >&2
		return 1
	fi
	"$work/$name/bin/piko" --version >/dev/null
	echo "builds: $name ok ($((SECONDS - t0)) s)"
}

one debug -DCMAKE_BUILD_TYPE=Debug
one minsizerel -DCMAKE_BUILD_TYPE=MinSizeRel
one debian -DCMAKE_BUILD_TYPE=None \
	"-DCMAKE_C_FLAGS=$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)" \
	"-DCMAKE_EXE_LINKER_FLAGS=$(dpkg-buildflags --get LDFLAGS)" \
	"-DCMAKE_SHARED_LINKER_FLAGS=$(dpkg-buildflags --get LDFLAGS)"
