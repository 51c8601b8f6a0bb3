// Fully connected layer on a batch of vectors, with an optional activation on its input and
// output (the time-embedding MLP and each resnet's time_emb_proj, which reads SiLU(emb); the
// text encoder's MLP, with quick_gelu or gelu). Activation codes: shaders/activations.wgsl.
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

// silu, erf, activate: shaders/activations.wgsl, prepended.

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
