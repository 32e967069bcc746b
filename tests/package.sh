#!/usr/bin/env bash
# The Debian package, as a user gets it: cpack builds it from the Release
# build (build-release, the images' build); apt installs it into a fresh
# Debian bookworm root (made by mmdebstrap, cached under
# ${PK_PKGTEST_CACHE:-~/.cache/pikoc/pkgtest}, keyed by its package list and
# mirrors; a chroot, so the host is not touched); there:
#   - apt resolves every dependency the package declares (dpkg-shlibdeps'
#     and the libev plugin's) from the Debian mirror, and nothing is broken;
#   - `piko --version` and `piko-controller --version` print the version;
#   - `piko server` answers /ready, on the epoll loop (the plugin the
#     package depends on is there);
#   - the library's two examples compile against the installed headers and
#     library with pkg-config alone (no -dev package), and echo a line
#     through the packaged server.
# Then the package is removed (apt-get purge) and leaves no file behind.
#
# Usage: tests/package.sh [BUILD_DIR]   (default build-release)
# Needs root (chroot, mount), mmdebstrap, dpkg-dev (hack/deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
build=${1:-build-release}
cache=${PK_PKGTEST_CACHE:-$HOME/.cache/pikoc/pkgtest}
mirror=${PK_IMAGE_MIRROR:-http://deb.debian.org/debian}
security=${PK_IMAGE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
suite=bookworm
pass=0 failed=0
log() { echo "package: $*"; }
ok() {
	pass=$((pass + 1))
	log "ok   $*"
}
bad() {
	failed=$((failed + 1))
	log "FAIL $1"
	[ -z "${2:-}" ] || sed 's/^/    /' <<<"$2"
}

# ---- the package
hack/build.sh "$build" -DCMAKE_BUILD_TYPE=Release -DPK_TESTS=OFF >/dev/null
rm -rf "$build/pkg"
(cd "$build" && cpack -B pkg >pkg.log 2>&1) || {
	bad "cpack" "$(tail -20 "$build/pkg.log")"
	exit 1
}
deb=$(ls "$build"/pkg/piko-c_*.deb)
version=$(sed -n 's/^project([^)]*VERSION \([0-9][0-9.]*\).*/\1/p' CMakeLists.txt)
ok "cpack wrote ${deb#"$build"/}"
fields=$(dpkg-deb -f "$deb" Package Version Depends)
if grep -q "^Version: $version\$" <<<"$fields" && grep -q 'libwebsockets17' <<<"$fields" &&
	grep -q 'libwebsockets-evlib-ev' <<<"$fields"; then
	ok "control: version $version, depends on libwebsockets17 and the libev plugin"
else
	bad "control fields" "$fields"
fi

# ---- a fresh Debian root (cached), a copy of it per run
sources=("deb $mirror $suite main" "deb $mirror $suite-updates main"
	"deb $security $suite-security main")
pkgs=(gcc libc6-dev pkg-config curl)
key=$(printf '%s\n' pkgtest-v1 "$(dpkg --print-architecture)" "$suite" "${pkgs[@]}" "${sources[@]}" |
	sha256sum | cut -c1-16)
base=$cache/root-$key.tar
mkdir -p "$cache"
exec 8>"$cache/.lock"
flock -w 1200 8 || {
	bad "lock on $cache" "timed out"
	exit 1
}
if [ ! -f "$base" ]; then
	log "mmdebstrap $suite (apt, ${pkgs[*]}) into $base"
	inc=$(
		IFS=,
		echo "${pkgs[*]}"
	)
	mmdebstrap --quiet --mode=root --variant=apt --format=tar --include="$inc" \
		--aptopt='Acquire::Languages "none"' \
		--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
		--customize-hook='rm -rf "$1"/var/cache/apt/*.bin' \
		"$suite" "$base.tmp" "${sources[@]}" >"$cache/mmdebstrap.log" 2>&1 || {
		bad "mmdebstrap" "$(tail -20 "$cache/mmdebstrap.log")"
		rm -f "$base.tmp"
		exit 1
	}
	mv "$base.tmp" "$base"
fi
exec 8>&-

root=$(mktemp -d /tmp/pk-pkgtest.XXXXXX)
server_pid=
cleanup() {
	[ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
	for m in "$root/proc" "$root/dev"; do
		mountpoint -q "$m" && umount -l "$m"
	done
	rm -rf "$root"
}
trap cleanup EXIT
tar -xf "$base" -C "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "$deb" "$root/tmp/"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }
before=$(in_root sh -c 'find / -xdev -type f ! -path "/var/*" ! -path "/tmp/*" ! -path "/proc/*" | sort')

# ---- install with apt: every dependency from the mirror
if out=$(in_root sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /tmp/${deb##*/}" 2>&1); then
	ok "apt-get install ./${deb##*/} in a fresh $suite root"
else
	bad "apt-get install" "$(tail -20 <<<"$out")"
	exit 1
fi
if out=$(in_root apt-get check 2>&1) && in_root dpkg -s piko-c | grep -q '^Status: install ok installed'; then
	ok "dpkg: piko-c installed, apt-get check clean"
else
	bad "apt-get check" "$out"
fi

# ---- the binaries, and the library's examples built against the package
got=$(in_root piko --version 2>&1 || true)
[ "$got" = "$version" ] && ok "piko --version: $got" || bad "piko --version" "$got"
got=$(in_root piko-controller --version 2>&1 || true)
[ "$got" = "piko-controller $version" ] && ok "piko-controller --version: $got" ||
	bad "piko-controller --version" "$got"
if dpkg-deb -c "$deb" | grep -q '/pkgconfig/piko-client.pc$'; then
	cp "$repo"/examples/*.c "$root/tmp/"
	if out=$(in_root sh -c 'cd /tmp && for f in echo_upstream dial; do cc -Wall -Werror -o "$f" "$f.c" $(pkg-config --cflags --libs piko-client) -pthread || exit 1; done' 2>&1); then
		ok "examples built against the installed libpiko-client with pkg-config (no -dev package)"
	else
		bad "examples against the installed library" "$out"
	fi
else
	bad "the package carries libpiko-client" "$(dpkg-deb -c "$deb")"
fi
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pp=$(port) up=$(port) ap=$(port) cp=$(port)
chroot "$root" /usr/bin/piko server --proxy.bind-addr "127.0.0.1:$pp" --upstream.bind-addr \
	"127.0.0.1:$up" --admin.bind-addr "127.0.0.1:$ap" --cluster.bind-addr "127.0.0.1:$cp" \
	>"$root/tmp/server.log" 2>&1 &
server_pid=$!
ready=
for _ in $(seq 100); do
	if in_root curl -fsS "http://127.0.0.1:$ap/ready" >/dev/null 2>&1; then
		ready=1
		break
	fi
	sleep 0.1
done
if [ -n "$ready" ] && ls -l "/proc/$server_pid/fd" 2>/dev/null | grep -q 'anon_inode:\[eventpoll\]' &&
	! grep -q 'using poll()' "$root/tmp/server.log"; then
	ok "piko server from the package: /ready 200, on the epoll loop"
else
	bad "piko server from the package" "$(tail -20 "$root/tmp/server.log")"
fi
# The examples, linked to the packaged library, through the packaged server.
if [ -x "$root/tmp/echo_upstream" ]; then
	chroot "$root" /tmp/echo_upstream -u "http://127.0.0.1:$up" -n 1 pkg-echo \
		>"$root/tmp/echo.log" 2>&1 &
	echo_pid=$!
	for _ in $(seq 100); do
		grep -q 'listening on pkg-echo' "$root/tmp/echo.log" && break
		sleep 0.1
	done
	got=$(echo "hello from the package" | timeout 20 chroot "$root" /tmp/dial \
		-u "http://127.0.0.1:$pp" pkg-echo 2>&1 || true)
	timeout 10 tail --pid="$echo_pid" -f /dev/null 2>/dev/null || kill "$echo_pid" 2>/dev/null || true
	[ "$got" = "hello from the package" ] && ok "the examples echo through the packaged server" ||
		bad "examples end to end" "dial: $got
$(cat "$root/tmp/echo.log")"
fi
kill "$server_pid" 2>/dev/null || true
wait "$server_pid" 2>/dev/null || true
server_pid=

# ---- purge: nothing left behind
if out=$(in_root sh -c 'DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq piko-c' 2>&1) &&
	! in_root sh -c 'command -v piko' >/dev/null; then
	after=$(in_root sh -c 'find / -xdev -type f ! -path "/var/*" ! -path "/tmp/*" ! -path "/proc/*" | sort')
	left=$(comm -13 <(echo "$before") <(echo "$after") | grep -E 'piko|/usr/include/piko' || true)
	[ -z "$left" ] && ok "apt-get purge piko-c: no file of it left" || bad "files left after purge" "$left"
else
	bad "apt-get purge" "$out"
fi

log "$pass passed, $failed failed"
[ "$failed" -eq 0 ]
