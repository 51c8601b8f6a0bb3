// Fully connected layer on a batch of vectors, with an optional activation on its input and
// output (the time-embedding MLP and each resnet's time_emb_proj, which reads SiLU(emb); the
// text encoder's projections and MLP, with quick_gelu or gelu; the cross-attention's keys and
// values of the text states). Activation codes: shaders/activations.wgsl.
//
// Bindings (group 0):
//   0 params  uniform LinearParams
//   1 input   storage read f32 [B, in_features]
//   2 weight  storage read vec4<f32> [in_features, out_blocks]: PyTorch's [out, in] transposed
//             at load and padded with zero columns to out_blocks * 4 outputs, so that the
//             outputs o = 4q..4q+3 of input k are one vec4 at k * out_blocks + q and
//             neighbouring invocations read neighbouring words (coalesced on GPUs)
//   3 bias    storage read vec4<f32> [out_blocks] (zero past out_features)
//   4 output  storage read_write f32 [B, out_features]
//
// Work mapping: each invocation computes a block of 4 rows (batch items) x 4 outputs: per input
// k one vec4 of weights and 4 inputs for 16 FMAs (one FMA per two loads in a one-output loop;
// on lavapipe every storage load costs far more than an FMA). Every output is still the sum
// over k in order, then the bias. Invocation i (flat over the grid, folded into 2-D when it
// exceeds the per-dimension limit) is output block i % out_blocks of row block i / out_blocks;
// a last row block with fewer than 4 rows skips the missing rows' loads and FMAs (a batch of
// one: 1 row x 4 outputs), outputs past out_features skip their stores. Workgroups are
// WORKGROUP_SIZE invocations, set per adapter (16 on CPU adapters: a batch-one layer of 512
// outputs is 128 invocations, which must still fill several workgroups to use several cores).

struct LinearParams {
    batch: u32,
    in_features: u32,
    out_features: u32,
    input_act: u32,
    output_act: u32,
    // ceil(out_features / 4): vec4 columns of `weight`.
    out_blocks: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: LinearParams;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

// Invocations per workgroup, set per adapter at pipeline creation (the spec's
// WorkgroupSize::PerAdapter, from Tuning::block_workgroup_size: 16 on CPU adapters, 64 on GPUs).
override WORKGROUP_SIZE: u32 = 16u;
const ROWS: u32 = 4u;

// silu, erf, activate: shaders/activations.wgsl, prepended.

// Input k of row `at` (the row's first element), with the input activation.
fn x(at: u32, k: u32) -> f32 {
    return activate(input[at + k], p.input_act);
}

// Outputs 4q..4q+3 of row b.
fn store_row(b: u32, q: u32, v: vec4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        let o = q * 4u + c;
        if (o < p.out_features) {
            output[b * p.out_features + o] = activate(v[c], p.output_act);
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn linear(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = (group.y * groups.x + group.x) * WORKGROUP_SIZE + local;
    if (i >= p.out_blocks * ((p.batch + ROWS - 1u) / ROWS)) {
        return;
    }
    let q = i % p.out_blocks;
    let b0 = (i / p.out_blocks) * ROWS;
    let rows = min(p.batch - b0, ROWS);
    let at = b0 * p.in_features;
    var acc0 = vec4(0.0);
    var acc1 = vec4(0.0);
    var acc2 = vec4(0.0);
    var acc3 = vec4(0.0);
    for (var k = 0u; k < p.in_features; k++) {
        let w = weight[k * p.out_blocks + q];
        acc0 += x(at, k) * w;
        if (rows > 1u) {
            acc1 += x(at + p.in_features, k) * w;
        }
        if (rows > 2u) {
            acc2 += x(at + 2u * p.in_features, k) * w;
        }
        if (rows > 3u) {
            acc3 += x(at + 3u * p.in_features, k) * w;
        }
    }
    let b = bias[q];
    store_row(b0, q, acc0 + b);
    if (rows > 1u) {
        store_row(b0 + 1u, q, acc1 + b);
    }
    if (rows > 2u) {
        store_row(b0 + 2u, q, acc2 + b);
    }
    if (rows > 3u) {
        store_row(b0 + 3u, q, acc3 + b);
    }
}
