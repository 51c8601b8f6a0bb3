// GroupNorm over NCHW with an optional FiLM-style scale/shift from the time embedding and an
// optional SiLU, one workgroup per (group, batch item). One pass sums d and d^2 for
// d = x - x_first (shifting by one of the group's own values keeps E[d^2] - E[d]^2 from
// cancelling), one tree reduction combines both sums, and a second pass writes the output: two
// loads and one store per element (on CPU Vulkan every storage access and every barrier is
// costly). The variance is the biased one, as torch's.
//
// Three entry points: `group_norm` writes the normalised tensor; `group_norm_coefficients` only
// the per-channel map y = (x - mean) * scale + shift, as (mean, scale, shift, 0) per (b, c),
// for a tiled convolution that applies it (and the SiLU) as it gathers its input
// (shaders/conv2d_tiled.wgsl `prologue`), so the normalised tensor is never written;
// `layer_norm_channels` is a LayerNorm over the channels of each pixel (the transformer's
// norms on its channel-major tokens): one invocation per (b, pixel), the same shifted sums and
// map, and no workgroup reduction (neighbouring invocations read neighbouring pixels).
//
// Bindings (group 0):
//   0 params  uniform NormParams
//   1 input   storage read f32 [B, C, H, W]
//   2 gamma   storage read f32 [C]
//   3 beta    storage read f32 [C]
//   4 temb    storage read f32 [B, temb_stride]: when scale_shift = 1, y = y * (1 + temb[b, c])
//             + temb[b, C + c] after the affine map (diffusers' resnet_time_scale_shift)
//   5 output  storage read_write f32 [B, C, H, W]; group_norm_coefficients: [B, C, 4]
//   6 second  storage read f32 [B, C - first_channels, H, W]: when first_channels < C the input
//             is the channel concatenation [input, second] (the up blocks' skip concatenation,
//             read in place on the GPU path instead of by a concat dispatch)
//
// Dispatch: group_norm and group_norm_coefficients (groups, B, 1); layer_norm_channels one
// invocation per (b, pixel), PIXEL_WORKGROUP_SIZE per workgroup, folded over x and y
// (`groups` must be 1; first_channels = channels, scale_shift = 0, silu = 0).

struct NormParams {
    channels: u32,
    groups: u32,
    plane: u32,
    eps: f32,
    silu: u32,
    scale_shift: u32,
    temb_stride: u32,
    first_channels: u32,
    // Images (read by layer_norm_channels only).
    batch: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: NormParams;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read> temb: array<f32>;
@group(0) @binding(5) var<storage, read_write> output: array<f32>;
@group(0) @binding(6) var<storage, read> second: array<f32>;

const WORKGROUP_SIZE: u32 = 64u;
const PIXEL_WORKGROUP_SIZE: u32 = 256u;

var<workgroup> partial: array<vec2<f32>, WORKGROUP_SIZE>;

fn workgroup_sum(local: u32, value: vec2<f32>) -> vec2<f32> {
    partial[local] = value;
    workgroupBarrier();
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride /= 2u) {
        if (local < stride) {
            partial[local] += partial[local + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// The group's elements (channel-major, flat index j) live in `input` from first_at for j <
// split and in `second` from second_at after: with no concatenation split = the group's size
// and first_at its offset in `input`, and every read is input[first_at + j].
var<private> first_at: u32;
var<private> second_at: u32;
var<private> split: u32;

fn element(j: u32) -> f32 {
    if (j < split) {
        return input[first_at + j];
    }
    return second[second_at + j - split];
}

// The mean and 1 / std of group g of image b (every invocation of the workgroup gets them),
// with the element reads of the group set up.
fn group_moments(g: u32, b: u32, local: u32) -> vec2<f32> {
    let channels_per_group = p.channels / p.groups;
    let count = channels_per_group * p.plane;
    let c0 = g * channels_per_group;
    let first_in_group = min(p.first_channels - min(c0, p.first_channels), channels_per_group);
    split = first_in_group * p.plane;
    first_at = (b * p.first_channels + c0) * p.plane;
    second_at = (b * (p.channels - p.first_channels) + c0 + first_in_group - p.first_channels) * p.plane;
    let first = element(0u);
    var sums = vec2(0.0);
    for (var j = local; j < count; j += WORKGROUP_SIZE) {
        let d = element(j) - first;
        sums += vec2(d, d * d);
    }
    return mean_and_inv_std(first, workgroup_sum(local, sums), count);
}

// The mean and 1 / std of `count` values from the sums of d and d^2, d = x - first.
fn mean_and_inv_std(first: f32, sums: vec2<f32>, count: u32) -> vec2<f32> {
    let moments = sums / f32(count);
    let variance = max(moments.y - moments.x * moments.x, 0.0);
    return vec2(first + moments.x, 1.0 / sqrt(variance + p.eps));
}

// Channel c's scale and shift in y = (x - mean) * scale + shift for image b: the affine map
// and the FiLM terms folded in, loaded once per channel rather than per element.
fn channel_map(c: u32, b: u32, inv_std: f32) -> vec2<f32> {
    var scale = inv_std * gamma[c];
    var shift = beta[c];
    if (p.scale_shift == 1u) {
        let film_scale = 1.0 + temb[b * p.temb_stride + c];
        scale *= film_scale;
        shift = shift * film_scale + temb[b * p.temb_stride + p.channels + c];
    }
    return vec2(scale, shift);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn group_norm(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let g = group.x;
    let b = group.y;
    let channels_per_group = p.channels / p.groups;
    let base = (b * p.channels + g * channels_per_group) * p.plane;
    let moments = group_moments(g, b, local);
    for (var k = 0u; k < channels_per_group; k++) {
        let c = g * channels_per_group + k;
        let map = channel_map(c, b, moments.y);
        let at = base + k * p.plane;
        for (var j = local; j < p.plane; j += WORKGROUP_SIZE) {
            var y = (element(k * p.plane + j) - moments.x) * map.x + map.y;
            if (p.silu == 1u) {
                y = y / (1.0 + exp(-y));
            }
            output[at + j] = y;
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn group_norm_coefficients(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let g = group.x;
    let b = group.y;
    let channels_per_group = p.channels / p.groups;
    let moments = group_moments(g, b, local);
    for (var k = local; k < channels_per_group; k += WORKGROUP_SIZE) {
        let c = g * channels_per_group + k;
        let map = channel_map(c, b, moments.y);
        let at = (b * p.channels + c) * 4u;
        output[at] = moments.x;
        output[at + 1u] = map.x;
        output[at + 2u] = map.y;
        output[at + 3u] = 0.0;
    }
}

@compute @workgroup_size(PIXEL_WORKGROUP_SIZE)
fn layer_norm_channels(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = (group.y * groups.x + group.x) * PIXEL_WORKGROUP_SIZE + local;
    let b = i / p.plane;
    let base = b * p.channels * p.plane + i % p.plane;
    if (b >= p.batch) {
        return;
    }
    let first = input[base];
    var sums = vec2(0.0);
    for (var c = 0u; c < p.channels; c++) {
        let d = input[base + c * p.plane] - first;
        sums += vec2(d, d * d);
    }
    let moments = mean_and_inv_std(first, sums, p.channels);
    for (var c = 0u; c < p.channels; c++) {
        let map = channel_map(c, b, moments.y);
        output[base + c * p.plane] = (input[base + c * p.plane] - moments.x) * map.x + map.y;
    }
}
