#!/usr/bin/env bash
# Unpacks a lavapipe with cooperative matrices into $LAVAPIPE_COOP_DIR (default
# /tmp/lavapipe-coop), for testing the tiled convolution's cooperative-matrix body
# (shaders/conv2d_tiled_coop.wgsl) on a machine without a GPU. Debian bookworm's Mesa (22.3)
# has no VK_KHR_cooperative_matrix; Debian sid's (26.x: 8x8x8 f16 -> f32, subgroups of 8) has,
# but it needs sid's glibc and LLVM, so its packages are unpacked, not installed, and
# tools/lavapipe-coop/run.sh runs a program with sid's dynamic loader and libraries. The
# system's packages are untouched. Needs curl, xz, dpkg-deb, python3 and the Debian mirror.
# Exits 0 when the driver is ready (again at once when it is already there), non-zero else.
set -euo pipefail
DIR=${LAVAPIPE_COOP_DIR:-/tmp/lavapipe-coop}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -f "$DIR/ready" ]; then
    exit 0
fi
rm -rf "$DIR"
mkdir -p "$DIR/debs" "$DIR/root"
curl -fsS "$MIRROR/dists/sid/main/binary-amd64/Packages.xz" | xz -d > "$DIR/Packages"
python3 "$HERE/closure.py" "$DIR/Packages" mesa-vulkan-drivers libvulkan1 > "$DIR/files"
while read -r path; do
    curl -fsS -o "$DIR/debs/$(basename "$path")" "$MIRROR/$path"
done < "$DIR/files"
for deb in "$DIR"/debs/*.deb; do
    dpkg-deb -x "$deb" "$DIR/root"
done
LIB=$DIR/root/usr/lib/x86_64-linux-gnu
test -f "$LIB/libvulkan_lvp.so" && test -f "$LIB/ld-linux-x86-64.so.2"
cat > "$DIR/lvp_icd.json" <<JSON
{ "file_format_version": "1.0.0",
  "ICD": { "library_path": "$LIB/libvulkan_lvp.so", "api_version": "1.4.0" } }
JSON
rm -rf "$DIR/debs" "$DIR/Packages"
echo "lavapipe $(grep -o 'mesa-vulkan-drivers_[^/]*\.deb' "$DIR/files") unpacked in $DIR"
touch "$DIR/ready"
