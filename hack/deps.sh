#!/usr/bin/env bash
# Install the Debian packages the build and the tests need, when missing.
# Idempotent and quiet when nothing is missing. Runs apt-get update once,
# only when something has to be installed.
set -euo pipefail

pkgs=(
	build-essential cmake pkg-config clang clang-format libclang-rt-14-dev
	libwebsockets-dev libhttp-parser-dev libjwt-dev libjson-c-dev libyaml-dev
	libssl-dev libcurl4-openssl-dev libcmocka-dev
	python3 python3-yaml curl nginx-light wrk procps iproute2
	openssl ca-certificates git util-linux mount
	mmdebstrap containerd runc containernetworking-plugins iptables nftables
)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "hack/deps.sh: installing ${missing[*]}" >&2
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
