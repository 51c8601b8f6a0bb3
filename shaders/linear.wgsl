// Fully connected layer on a batch of vectors, with optional SiLU on its input and output
// (the time-embedding MLP and each resnet's time_emb_proj, which reads SiLU(emb)).
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
    input_silu: u32,
    output_silu: u32,
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
        var x = input[b * p.in_features + k];
        if (p.input_silu == 1u) {
            x = silu(x);
        }
        acc += x * weight[o * p.in_features + k];
    }
    var y = acc + bias[o];
    if (p.output_silu == 1u) {
        y = silu(y);
    }
    output[i] = y;
}
