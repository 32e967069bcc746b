#!/usr/bin/env bash
# Install the Debian packages the build and the tests need, when missing.
# Idempotent and quiet when nothing is missing. Runs apt-get update once,
# only when something has to be installed. With --check, then probes them.
set -euo pipefail

pkgs=(
	build-essential dpkg-dev cmake pkg-config clang clang-format clang-tools libclang-rt-14-dev
	libwebsockets-dev libwebsockets-evlib-ev libev-dev libhttp-parser-dev libjwt-dev
	libjson-c-dev libyaml-dev libssl-dev libcurl4-openssl-dev libcmocka-dev
	python3 python3-yaml curl nginx-light wrk procps iproute2
	openssl ca-certificates git util-linux mount
	mmdebstrap containerd runc containernetworking-plugins iptables nftables
)

# hack/deps.sh --check: after installing, prove that every tool and
# toolchain feature a later step uses works here, each probe naming the
# package that brings it. A package can be installed and still not give a
# step what it needs (the fuzz step once lacked libclang-rt-14-dev's ASan
# runtime though clang was there): the test command runs this first.
check=0
[ "${1:-}" = --check ] && check=1

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo="sudo"
	echo "hack/deps.sh: installing ${missing[*]}" >&2
	$sudo apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
[ $check = 1 ] || exit 0

failed=0
probe() { # package, what, command...
	local pkg=$1 what=$2
	shift 2
	if ! "$@" >/dev/null 2>&1; then
		echo "hack/deps.sh: missing: $what (package $pkg)" >&2
		failed=1
	fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'int main(void) { return 0; }\n' >"$tmp/m.c"
printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$tmp/f.c"
for c in cmake:cmake make:make pkg-config:pkg-config clang-format:clang-format \
	scan-build:clang-tools \
	curl:curl nginx:nginx-light wrk:wrk openssl:openssl git:git ip:iproute2 \
	unshare:util-linux nsenter:util-linux setpriv:util-linux mount:mount \
	mmdebstrap:mmdebstrap containerd:containerd containerd-shim-runc-v2:containerd \
	ctr:containerd runc:runc nft:nftables iptables-save:iptables \
	dpkg-buildflags:dpkg-dev dpkg-shlibdeps:dpkg-dev dpkg-deb:dpkg cpack:cmake \
	chroot:coreutils mountpoint:util-linux flock:util-linux apt-get:apt; do
	probe "${c#*:}" "command ${c%%:*}" command -v "${c%%:*}"
done
for m in libwebsockets:libwebsockets-dev yaml-0.1:libyaml-dev openssl:libssl-dev \
	json-c:libjson-c-dev libjwt:libjwt-dev libcurl:libcurl4-openssl-dev cmocka:libcmocka-dev; do
	probe "${m#*:}" "pkg-config module ${m%%:*}" pkg-config --exists "${m%%:*}"
done
probe libhttp-parser-dev "http_parser.h" test -f /usr/include/http_parser.h
# The server's epoll loop: libev's header and library, and lws's libev
# plugin, which lws dlopen()s (the server falls back to poll() without it).
probe libev-dev "ev.h" test -f /usr/include/ev.h
probe libwebsockets-evlib-ev "lws's libev plugin" \
	test -f "/usr/lib/$(gcc -print-multiarch)/libwebsockets-evlib_ev.so"
for p in bridge host-local portmap; do
	probe containernetworking-plugins "CNI plugin $p" test -x "/usr/lib/cni/$p"
done
probe build-essential "gcc with ASan+UBSan" gcc -fsanitize=address,undefined -o "$tmp/a" "$tmp/m.c"
probe libc6-dev "gcc -static (the pause image)" gcc -static -o "$tmp/s" "$tmp/m.c"
probe libclang-rt-14-dev "clang with libFuzzer+ASan runtime" \
	clang -fsanitize=fuzzer,address,undefined -o "$tmp/f" "$tmp/f.c"
probe clang-tools "scan-build (the clang static analyzer, hack/scan.sh)" \
	scan-build -o "$tmp/scan" --status-bugs cc -c -o "$tmp/m.o" "$tmp/m.c"
probe python3-yaml "python3 module yaml" python3 -c 'import yaml'
[ -x /usr/local/go/bin/go ] || { echo "hack/deps.sh: missing: Go in /usr/local/go (the machine's; builds the test peers)" >&2; failed=1; }
[ $failed = 0 ] || exit 1
echo "hack/deps.sh: every tool and toolchain feature the tests use is here" >&2
