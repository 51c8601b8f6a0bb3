// Fully connected layer on a batch of vectors, with an optional activation on its input and
// output (the time-embedding MLP and each resnet's time_emb_proj, which reads SiLU(emb); the
// text encoder's MLP, with quick_gelu or gelu). Activation codes: 0 none, 1 SiLU,
// 2 quick_gelu (x * sigmoid(1.702 x)), 3 gelu (exact, with erf).
//
// Bindings (group 0):
//   0 params  uniform LinearParams
//   1 input   storage read f32 [B, in_features]
//   2 weight  storage read f32 [out_features, in_features] (PyTorch's layout)
//   3 bias    storage read f32 [out_features]
//   4 output  storage read_write f32 [B, out_features]

struct LinearParams {
    batch: u32,
    in_features: u32,
    out_features: u32,
    input_act: u32,
    output_act: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: LinearParams;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;

const WORKGROUP_SIZE: u32 = 256u;

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

// erf(x) to within 1.5e-7 (Abramowitz and Stegun 7.1.26); WGSL has no erf.
fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.3275911 * abs(x));
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
        + t * (-1.453152027 + t * 1.061405429))));
    return sign(x) * (1.0 - poly * exp(-x * x));
}

fn activate(x: f32, code: u32) -> f32 {
    switch code {
        case 1u: {
            return silu(x);
        }
        case 2u: {
            return x / (1.0 + exp(-1.702 * x));
        }
        case 3u: {
            return 0.5 * x * (1.0 + erf(x * 0.70710678118654752));
        }
        default: {
            return x;
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
    if (i >= p.batch * p.out_features) {
        return;
    }
    let b = i / p.out_features;
    let o = i - b * p.out_features;
    var acc = 0.0;
    for (var k = 0u; k < p.in_features; k++) {
        let x = activate(input[b * p.in_features + k], p.input_act);
        acc += x * weight[o * p.in_features + k];
    }
    output[i] = activate(acc + bias[o], p.output_act);
}
