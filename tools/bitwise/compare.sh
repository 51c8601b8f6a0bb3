#!/usr/bin/env bash
# Bitwise comparison of two builds of the CLI on lavapipe (or any one adapter): the bundled
# model sampled with DDIM and DDPM, a class-conditional fixture sampled with labels, and one
# forward pass of every U-Net fixture. Prints `same` or `DIFFERENT` per output; exits 1 on any
# difference. Used to show that a refactor changes no number.
#
#   tools/bitwise/compare.sh OLD_BINARY NEW_BINARY
set -euo pipefail
OLD=$1; NEW=$2
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
F=$ROOT/tests/fixtures/diffusers
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export WGPU_BACKEND=${WGPU_BACKEND:-vulkan}

# Forward inputs: each fixture's `x` and `timesteps` (and `class_labels`) under the CLI's names.
python3 - "$F" "$WORK" <<'PY'
import json, struct, sys
fixtures, out = sys.argv[1], sys.argv[2]
def read(path):
    b = open(path, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
    header = json.loads(b[8:8 + n]); data = b[8 + n:]
    return {k: (v['dtype'], v['shape'], data[v['data_offsets'][0]:v['data_offsets'][1]])
            for k, v in header.items() if k != '__metadata__'}
def write(path, tensors):
    header, blob = {}, b''
    for k, (dtype, shape, raw) in tensors.items():
        header[k] = {'dtype': dtype, 'shape': shape, 'data_offsets': [len(blob), len(blob) + len(raw)]}
        blob += raw
    h = json.dumps(header).encode(); h += b' ' * ((8 - len(h) % 8) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(h)) + h + blob)
sources = {'small': f'{fixtures}/unet_small_forward.safetensors'}
for v in ['class_conditional', 'scale_shift_multihead', 'no_mid_learned_sigma']:
    sources[v] = f'{fixtures}/unet_variants/{v}/forward.safetensors'
for name, path in sources.items():
    t = read(path)
    inputs = {'sample': t['x'], 'timesteps': t['timesteps']}
    if 'class_labels' in t:
        inputs['class_labels'] = t['class_labels']
    write(f'{out}/in_{name}.safetensors', inputs)
PY

run() {
    local bin=$1 out=$2
    mkdir -p "$out"
    "$bin" sample --steps 5 --batch 4 --seed 3 --out "$out/bundled_ddim5.safetensors" >/dev/null
    "$bin" sample --steps 4 --batch 2 --seed 5 --sampler ddpm --out "$out/bundled_ddpm4.safetensors" >/dev/null
    "$bin" sample --model "$F/unet_variants/class_conditional" --steps 3 --batch 2 --class 1,3 \
        --out "$out/class_ddim3.safetensors" >/dev/null
    "$bin" forward --model "$F/unet_small" --input "$WORK/in_small.safetensors" \
        --out "$out/fwd_small.safetensors" >/dev/null
    for v in class_conditional scale_shift_multihead no_mid_learned_sigma; do
        "$bin" forward --model "$F/unet_variants/$v" --input "$WORK/in_$v.safetensors" \
            --out "$out/fwd_$v.safetensors" >/dev/null
    done
}
run "$OLD" "$WORK/old" 2>/dev/null
run "$NEW" "$WORK/new" 2>/dev/null
status=0
for f in "$WORK"/old/*; do
    name=$(basename "$f")
    if cmp -s "$f" "$WORK/new/$name"; then echo "same       $name"; else echo "DIFFERENT  $name"; status=1; fi
done
exit $status
