#!/usr/bin/env bash
# Runs a program (a test binary, the CLI; not cargo) on the lavapipe that setup.sh unpacked:
# with Debian sid's dynamic loader, libraries and Vulkan loader, and only that driver.
#
#   tools/lavapipe-coop/run.sh target/release/diffusion-wgpu bench --precision mixed
set -euo pipefail
DIR=${LAVAPIPE_COOP_DIR:-/tmp/lavapipe-coop}
LIB=$DIR/root/usr/lib/x86_64-linux-gnu
export VK_ICD_FILENAMES=$DIR/lvp_icd.json WGPU_BACKEND=vulkan
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/xdg-runtime}
exec "$LIB/ld-linux-x86-64.so.2" --library-path "$LIB" "$@"
