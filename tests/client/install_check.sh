#!/bin/sh
# `cmake --install` of a build tree into a scratch prefix, then the two
# example programs compiled and linked against the installed library with
# nothing but pkg-config (shared), and against the static archive, as a user
# of libpiko-client would. Usage: install_check.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
cc=${CC:-cc}
# The ASan build's library needs the sanitizers in what links it.
extra=${PK_EXTRA_CFLAGS:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
for f in bin/piko bin/piko-controller include/piko/client.h lib/pkgconfig/piko-client.pc; do
	test -e "$tmp/prefix/$f" || { echo "not installed: $f" >&2; exit 1; }
done
ls "$tmp"/prefix/lib*/libpiko-client.so.0 "$tmp"/prefix/lib*/libpiko-client.a >/dev/null
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
for ex in echo_upstream dial; do
	# shellcheck disable=SC2046,SC2086 # pkg-config's words (and extra) are meant to split
	$cc -Wall -Wextra -Werror $extra "$src/examples/$ex.c" $(pkg-config --cflags --libs piko-client) \
		-pthread -o "$tmp/$ex"
	LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/$ex" 2>/dev/null && { echo "$ex: no usage error" >&2; exit 1; }
	# shellcheck disable=SC2046
	$cc -Wall -Wextra -Werror $extra "$src/examples/$ex.c" $(pkg-config --cflags piko-client) \
		"$tmp/prefix/lib/libpiko-client.a" \
		$(pkg-config --static --libs piko-client | sed 's/-lpiko-client//') -pthread \
		-o "$tmp/$ex-static"
done
# The shared library exports only the public API.
if nm -D --defined-only "$tmp/prefix/lib/libpiko-client.so.0" | awk '{print $3}' | grep -v '^piko_' | grep -q .; then
	echo "libpiko-client.so exports more than piko_*" >&2
	exit 1
fi
echo "install check: ok"
