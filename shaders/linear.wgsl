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
// rows past B load the last row and skip their stores, outputs past out_features skip theirs.

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

const WORKGROUP_SIZE: u32 = 256u;
const ROWS: u32 = 4u;

// silu, erf, activate: shaders/activations.wgsl, prepended.

// Input k of row `at` (the row's first element), with the input activation.
fn x(at: u32, k: u32) -> f32 {
    return activate(input[at + k], p.input_act);
}

// Outputs 4q..4q+3 of row b, when the row exists.
fn store_row(b: u32, q: u32, v: vec4<f32>) {
    if (b >= p.batch) {
        return;
    }
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
    let last = p.batch - 1u;
    let at0 = min(b0, last) * p.in_features;
    let at1 = min(b0 + 1u, last) * p.in_features;
    let at2 = min(b0 + 2u, last) * p.in_features;
    let at3 = min(b0 + 3u, last) * p.in_features;
    var acc0 = vec4(0.0);
    var acc1 = vec4(0.0);
    var acc2 = vec4(0.0);
    var acc3 = vec4(0.0);
    for (var k = 0u; k < p.in_features; k++) {
        let w = weight[k * p.out_blocks + q];
        acc0 += x(at0, k) * w;
        acc1 += x(at1, k) * w;
        acc2 += x(at2, k) * w;
        acc3 += x(at3, k) * w;
    }
    let b = bias[q];
    store_row(b0, q, acc0 + b);
    store_row(b0 + 1u, q, acc1 + b);
    store_row(b0 + 2u, q, acc2 + b);
    store_row(b0 + 3u, q, acc3 + b);
}
