#!/usr/bin/env bash
# The GPU device check of issue 12, in one run of at most 8 minutes on a GPU machine:
#   1. build (release), 2. `info`, 3. the parity tests on the default adapter (the U-Net
#   forward against diffusers for the adapter's kernels, for every tile and split-K factor
#   of the tiled convolution and autotuned; the conditional U-Net, whose transformers run on
#   the convolutions; every convolution kernel against an f64 reference), 4. `bench --arch
#   ddpm-cifar10-32 --batch 1,16,64` (autotuned: `--autotune quick`, the CLI's default,
#   whose plans the JSON lists), 5. the bundled model at
#   `--batch 1,16,256`, both with `--peer python3 --peer-device cuda` when PyTorch sees CUDA,
#   6. the same cifar10 batches with the shape rule (`--autotune off`) and with the previous
#   GPU convolution (`--block-size small`), the "before"s of the kernel log, and with the
#   group norms inside the convolutions (`--norm-in-conv`), 7. cifar10 and the bundled model
#   with `--precision mixed` (f16 convolution operands, on the tensor cores where wgpu exposes
#   cooperative matrices: the bench's model line says which), and cifar10 mixed once more with
#   `--cooperative-matrix off` (the f16 FMA kernel); the parity step runs
#   tests/mixed_precision.rs too. Step limits add up to 8 minutes.
# Every step's output goes under benches/results/device-check-<UTC time>/ (JSON for the
# benches); a step that fails is reported and the script goes on, exiting 1 at the end.
#
#   benches/device-check.sh                     # on the GPU machine
#   DEVICE_CHECK_QUICK=1 benches/device-check.sh  # tiny settings (lavapipe: shows it runs)
#   DEVICE_CHECK_SD=1 benches/device-check.sh     # and SD 1.5's U-Net after the 8 minutes
#
# DEVICE_CHECK_OUT=DIR writes there instead. WGPU_BACKEND / WGPU_ADAPTER_NAME pick the
# adapter as for the CLI.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${DEVICE_CHECK_OUT:-$ROOT/benches/results/device-check-$STAMP}
mkdir -p "$OUT"
QUICK=${DEVICE_CHECK_QUICK:-0}
if [ "$QUICK" = 1 ]; then
    CIFAR_BATCHES=1; BUNDLED_BATCHES=1; REPEATS=1; STEPS=0; PROFILE=(--no-profile); SD_SIZE=8
    TESTS=(--lib conv::tests)
    LIB_TESTS=()
    SLOW=10 # a software adapter: step limits x10
else
    CIFAR_BATCHES=1,16,64; BUNDLED_BATCHES=1,16,256; REPEATS=5; STEPS=0; PROFILE=(); SD_SIZE=64
    # Two steps: cargo applies a test-name filter to every target it runs.
    TESTS=(--test unet_forward --test unet_cond --test autotune --test mixed_precision)
    LIB_TESTS=(--lib conv::)
    SLOW=1
fi
FAILED=()
BIN=$ROOT/target/release/diffusion-wgpu

# step NAME SECONDS COMMAND...: runs COMMAND under a time limit, output to $OUT/NAME.txt.
step() {
    local name=$1 limit=$(($2 * SLOW))
    shift 2
    echo "== $name (${SECONDS}s elapsed)"
    if ! timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1; then
        echo "   FAILED (see $OUT/$name.txt)"
        tail -5 "$OUT/$name.txt" | sed 's/^/   /'
        FAILED+=("$name")
    fi
}

# bench NAME SECONDS ARGS...: a bench whose JSON goes to $OUT/NAME.json.
bench() {
    local name=$1 limit=$(($2 * SLOW))
    shift 2
    echo "== bench $name (${SECONDS}s elapsed)"
    if ! timeout "$limit" "$BIN" bench "$@" --json >"$OUT/$name.json" 2>"$OUT/$name.log"; then
        echo "   FAILED (see $OUT/$name.log)"
        tail -5 "$OUT/$name.log" | sed 's/^/   /'
        FAILED+=("$name")
    fi
}

step build 150 cargo build --release
step info 10 "$BIN" info
step parity 80 cargo test --release "${TESTS[@]}"
if [ ${#LIB_TESTS[@]} -gt 0 ]; then
    step parity-conv 40 cargo test --release "${LIB_TESTS[@]}"
fi

PEER=()
if python3 -c 'import torch; assert torch.cuda.is_available()' >/dev/null 2>&1; then
    PEER=(--peer python3 --peer-device cuda)
    echo "   PyTorch with CUDA found: benches include the peer"
else
    echo "   no PyTorch with CUDA: benches without the peer"
fi
COMMON=(--repeats "$REPEATS" --steps "$STEPS" "${PROFILE[@]}")
bench cifar10 45 --arch ddpm-cifar10-32 --batch "$CIFAR_BATCHES" "${COMMON[@]}" "${PEER[@]}" \
    --autotune quick
bench bundled 35 --batch "$BUNDLED_BATCHES" "${COMMON[@]}" "${PEER[@]}"
# The shape rule instead of autotuned plans, then the convolution before the tiled one, same
# batches, for the kernel log (no profile, no peer).
bench cifar10-autotune-off 15 --arch ddpm-cifar10-32 --batch "$CIFAR_BATCHES" \
    --repeats "$REPEATS" --steps 0 --no-profile --autotune off
bench cifar10-small-blocks 20 --arch ddpm-cifar10-32 --batch "$CIFAR_BATCHES" \
    --repeats "$REPEATS" --steps 0 --no-profile --block-size small
# The group norms applied inside the convolutions' gather (off by default until measured
# here), against cifar10-autotune-off.
bench cifar10-norm-in-conv 15 --arch ddpm-cifar10-32 --batch "$CIFAR_BATCHES" \
    --repeats "$REPEATS" --steps 0 --no-profile --autotune off --norm-in-conv
# Mixed precision (f16 convolution operands; cooperative matrices where the adapter has
# them), same batches, against the f32 runs above; then cifar10 on the f16 FMA kernel.
bench cifar10-mixed 30 --arch ddpm-cifar10-32 --batch "$CIFAR_BATCHES" \
    --repeats "$REPEATS" --steps 0 --no-profile --precision mixed
bench bundled-mixed 15 --batch "$BUNDLED_BATCHES" \
    --repeats "$REPEATS" --steps 0 --no-profile --precision mixed
bench cifar10-mixed-fma 25 --arch ddpm-cifar10-32 --batch "$CIFAR_BATCHES" \
    --repeats "$REPEATS" --steps 0 --no-profile --precision mixed --cooperative-matrix off

# Optional, outside the 8 minutes (DEVICE_CHECK_SD=1): SD 1.5's conditional U-Net with random
# weights at 64 x 64 latents, batch 1 and 2 (classifier-free guidance's), with the GPU time
# per kernel family; its transformers run on the convolutions (benches/NOTES.md has the
# lavapipe figures). Drawing 860M random weights on the host takes ~15 s of the limit. With
# the default steps this passes the 10 minutes of one device call; after a run of the script,
# the step's command alone is: target/release/diffusion-wgpu bench --arch sd15-unet --size 64
# --batch 1,2 --repeats 5 --steps 0
if [ "${DEVICE_CHECK_SD:-0}" = 1 ]; then
    step sd15-unet 120 "$BIN" bench --arch sd15-unet --size "$SD_SIZE" --batch 1,2 \
        --repeats "$REPEATS" --steps 0
fi

echo "== done in ${SECONDS}s: $OUT"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "failed steps: ${FAILED[*]}"
    exit 1
fi
