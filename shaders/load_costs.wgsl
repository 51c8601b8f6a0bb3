// The kernels of examples/load_costs.rs (a measurement; the library does not use them): each
// invocation sums 4000 dependent vec4 loads of a 4096-vec4 table held in a uniform buffer, a
// storage buffer or a texture (64 x 64 texels), at an address shared by the workgroup
// ("shared") or its own ("divergent").
//
// Bindings (group 0): 0 the table as a uniform buffer, 1 the same as a storage buffer, 3 the
// same as an rgba32float texture (each entry point binds one of them), 2 one f32 per
// invocation written so the loads are not optimised away.

@group(0) @binding(0) var<uniform> table_uniform: array<vec4<f32>, 4096>;
@group(0) @binding(1) var<storage, read> table_storage: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> sums: array<f32>;
@group(0) @binding(3) var table_texture: texture_2d<f32>;

const LOADS: u32 = 4000u;

fn index(shared_start: u32, id: u32, divergent: bool, i: u32) -> u32 {
    return select(shared_start + i, id * 7u + i, divergent) % 4096u;
}

fn texel(j: u32) -> vec4<f32> {
    return textureLoad(table_texture, vec2(j % 64u, j / 64u), 0);
}

@compute @workgroup_size(16)
fn storage_shared(@builtin(global_invocation_id) id: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
    var acc = vec4(0.0);
    for (var i = 0u; i < LOADS; i++) {
        acc += table_storage[index(wg.x % 64u, id.x, false, i)];
    }
    sums[id.x] = dot(acc, vec4(1.0));
}

@compute @workgroup_size(16)
fn storage_divergent(@builtin(global_invocation_id) id: vec3<u32>) {
    var acc = vec4(0.0);
    for (var i = 0u; i < LOADS; i++) {
        acc += table_storage[index(0u, id.x, true, i)];
    }
    sums[id.x] = dot(acc, vec4(1.0));
}

@compute @workgroup_size(16)
fn uniform_shared(@builtin(global_invocation_id) id: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
    var acc = vec4(0.0);
    for (var i = 0u; i < LOADS; i++) {
        acc += table_uniform[index(wg.x % 64u, id.x, false, i)];
    }
    sums[id.x] = dot(acc, vec4(1.0));
}

@compute @workgroup_size(16)
fn uniform_divergent(@builtin(global_invocation_id) id: vec3<u32>) {
    var acc = vec4(0.0);
    for (var i = 0u; i < LOADS; i++) {
        acc += table_uniform[index(0u, id.x, true, i)];
    }
    sums[id.x] = dot(acc, vec4(1.0));
}

@compute @workgroup_size(16)
fn texture_shared(@builtin(global_invocation_id) id: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
    var acc = vec4(0.0);
    for (var i = 0u; i < LOADS; i++) {
        acc += texel(index(wg.x % 64u, id.x, false, i));
    }
    sums[id.x] = dot(acc, vec4(1.0));
}

@compute @workgroup_size(16)
fn texture_divergent(@builtin(global_invocation_id) id: vec3<u32>) {
    var acc = vec4(0.0);
    for (var i = 0u; i < LOADS; i++) {
        acc += texel(index(0u, id.x, true, i));
    }
    sums[id.x] = dot(acc, vec4(1.0));
}
