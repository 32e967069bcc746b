#!/usr/bin/env bash
# Build the test application image for tests/k8s/story.sh, offline:
#
#   tests/k8s/testapp.sh OUT_DIR        prints "testapp OUT_DIR/testapp.oci.tar"
#
# localhost/pikoc-test/app:1, one layer: Debian's busybox-static (a static binary,
# so no base rootfs is needed) with /www/index.html. The story runs it as
# a web server (`httpd -f -p 8080 -h /www`) and as a TCP echo server
# (`nc -ll -p 9000 -e /bin/busybox cat`): the "real services" behind the agent. The
# .deb is fetched with `apt-get download` from the Debian mirror (no
# registry is reachable) and cached beside hack/image.sh's images.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
out=$1
cache=${PK_IMAGE_CACHE:-$HOME/.cache/pikoc/images}/testapp
mkdir -p "$out" "$cache"

deb=$(ls "$cache"/busybox-static_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
	# apt-get download writes to the current directory; as root it warns
	# that _apt cannot write there (harmless).
	(cd "$cache" && { apt-get download busybox-static 2>/dev/null ||
		{ apt-get update -qq && apt-get download busybox-static; }; }) >&2
	deb=$(ls "$cache"/busybox-static_*.deb | head -n1)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/root"
printf 'hello from the web service in namespace app\n' >"$work/index.html"
layer=$(python3 hack/image/oci.py layer "$work/layer.tar.gz" \
	--file "$work/root/bin/busybox:/bin/busybox:0755" \
	--file "$work/index.html:/www/index.html:0644")
read -r _ diff_id _ <<<"$layer"
python3 hack/image/oci.py image "$out/testapp.oci.tar" --name localhost/pikoc-test/app:1 \
	--layer "$work/layer.tar.gz:$diff_id" \
	--config '{"config": {"Entrypoint": ["/bin/busybox"], "User": "65532:65532", "WorkingDir": "/www"}}' >/dev/null
echo "testapp $out/testapp.oci.tar"
