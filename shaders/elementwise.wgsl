// Elementwise kernels on flat f32 tensors: an affine map, a sum, a channel concatenation and
// GEGLU (shaders/activations.wgsl is prepended for its gelu).
//
// Bindings (group 0):
//   0 params  uniform ElementwiseParams
//   1 a       storage read f32: `affine` and `add` read [len]; `concat` reads [B, Ca, H, W]
//   2 b       storage read f32: `add` reads [len]; `concat` reads [B, Cb, H, W] (unused otherwise)
//   3 out     storage read_write f32 [len]; for `concat`, [B, Ca + Cb, H, W]
//
// affine: out = scale * a + offset    add: out = a + b
// concat: out[n, c] = a[n, c] for c < Ca, b[n, c - Ca] otherwise, with a_plane = Ca*H*W and
//         b_plane = Cb*H*W elements per batch item.
// geglu: a is [len / F, 2F] with F = a_plane; out[r, j] = a[r, j] * gelu(a[r, F + j]).

struct ElementwiseParams {
    len: u32,
    a_plane: u32,
    b_plane: u32,
    scale: f32,
    offset: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: ElementwiseParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WORKGROUP_SIZE: u32 = 256u;

fn flat_index(group: vec3<u32>, groups: vec3<u32>, local: u32) -> u32 {
    return (group.y * groups.x + group.x) * WORKGROUP_SIZE + local;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn affine(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = flat_index(group, groups, local);
    if (i < p.len) {
        out[i] = p.scale * a[i] + p.offset;
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn add(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = flat_index(group, groups, local);
    if (i < p.len) {
        out[i] = a[i] + b[i];
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn concat(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = flat_index(group, groups, local);
    if (i >= p.len) {
        return;
    }
    let plane = p.a_plane + p.b_plane;
    let n = i / plane;
    let r = i - n * plane;
    if (r < p.a_plane) {
        out[i] = a[n * p.a_plane + r];
    } else {
        out[i] = b[n * p.b_plane + r - p.a_plane];
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn geglu(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = flat_index(group, groups, local);
    if (i >= p.len) {
        return;
    }
    let row = i / p.a_plane;
    let j = i - row * p.a_plane;
    let at = row * 2u * p.a_plane + j;
    out[i] = a[at] * gelu(a[at + p.a_plane]);
}
