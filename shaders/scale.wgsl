// The analytic test model: output = factor * input, elementwise (eps = 0.1 * x in the tests,
// the toy model of the diffusers fixtures).
//
// Bindings (group 0):
//   0 params  uniform ScaleParams { factor: f32, len: u32 }
//   1 input   storage read f32 [len]
//   2 output  storage read_write f32 [len]

struct ScaleParams {
    factor: f32,
    len: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: ScaleParams;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;

const WORKGROUP_SIZE: u32 = 256u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn scale(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = (group.y * groups.x + group.x) * WORKGROUP_SIZE + local;
    if (i < params.len) {
        output[i] = params.factor * input[i];
    }
}
