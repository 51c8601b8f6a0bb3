// 2-D convolution (1x1 or 3x3, stride 1 or 2, zero padding), NCHW, with optional fusions:
// a nearest 2x upsample of the input, a per-(batch, channel) bias from the time embedding, and
// a residual sum with an output scale.
//
// Bindings (group 0):
//   0 params    uniform ConvParams
//   1 input     storage read f32 [B, C_in, H_in, W_in]
//   2 weight    texture_2d<f32> (rgba32float, rows of 2^texel_row_shift texels; see
//               crate::gpu::TexelTable): the weights in blocks of BLOCK_C output channels:
//               texel ((cb * C_in + ci) * K * K + tap) * BLOCK_C / 4 + q holds channels
//               cb * BLOCK_C + 4q .. 4q + 3 (zero past C_out)
//   3 bias      storage read f32 [C_out]
//   4 temb      storage read f32 [B, temb_stride]: added at [b, c] when has_temb = 1
//   5 residual  storage read f32 [B, C_out, H_out, W_out]: when has_residual = 1 the output is
//               (residual + conv) * output_scale
//   6 output    storage read_write f32 [B, C_out, H_out, W_out]
//
// The input is read as if it were 2x nearest-upsampled when upsample = 1 (diffusers' Upsample2D
// followed by its conv). Padding: `pad` zero rows/columns before the first input row/column;
// reads past the last row/column are zero too, which gives diffusers' right/bottom-only padding
// for downsample_padding = 0 (pad = 0, H_out = H_in / 2).
//
// Work mapping: each invocation computes a register block of BLOCK_C output channels x BLOCK_Y
// rows x BLOCK_X columns (32 x 4 x 4) of one image, accumulating in f32 over the input channels
// and taps; every input value and weight it needs is loaded once per block and tap row. On
// CPU Vulkan (lavapipe) a storage-buffer load is done lane by lane and costs far more than an
// FMA, while a texel fetch is vectorised: the weights come from a texture (four channels per
// fetch) and the block is sized to maximise FMAs per input loaded (32 channels measured 1.2x
// faster than 16 there). A workgroup holds WORKGROUP_SIZE pixel blocks of one channel block:
// the workgroup index w (folded over x and y when the grid exceeds the per-dimension
// limit) is channel block w / pixel_groups, pixel group w % pixel_groups. Pixel blocks run over
// (b, block row, block column), column fastest. Blocks past the edges (C_out, H_out, W_out not
// multiples of the block) read zero weights and masked inputs and skip their stores.
//
// 3x3 stride-1 convolutions (with or without upsampling) load, per input channel, a window of
// (BLOCK_Y + 2) rows x (BLOCK_X + 2) columns shared by all nine taps; other shapes (1x1,
// stride 2) load the block's BLOCK_Y x BLOCK_X inputs per tap.

struct ConvParams {
    batch: u32,
    c_in: u32,
    h_in: u32,
    w_in: u32,
    c_out: u32,
    h_out: u32,
    w_out: u32,
    kernel: u32,
    stride: u32,
    pad: u32,
    upsample: u32,
    has_temb: u32,
    temb_stride: u32,
    has_residual: u32,
    output_scale: f32,
    texel_row_shift: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var weight: texture_2d<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> temb: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<f32>;
@group(0) @binding(6) var<storage, read_write> output: array<f32>;

// Invocations per workgroup, set per adapter at pipeline creation (the spec's
// WorkgroupSize::PerAdapter, from Tuning::block_workgroup_size: 16 on CPU adapters, where it
// hardly matters, 64 on GPUs, two warps / one wavefront).
override WORKGROUP_SIZE: u32 = 16u;
const BLOCK_C: u32 = 32u;
const BLOCK_Y: u32 = 4u;
const BLOCK_X: u32 = 4u;

// acc[c][row]: channel co0 + c, output row oy0 + row, columns ox0 + 0..3.
var<private> acc: array<array<vec4<f32>, 4>, BLOCK_C>;

// Adds w * x to the accumulators of channel c; x holds the block's inputs for one tap in the
// layout of acc[c].
fn channel_fma(c: u32, w: f32, x: array<vec4<f32>, 4>) {
    acc[c][0] += w * x[0];
    acc[c][1] += w * x[1];
    acc[c][2] += w * x[2];
    acc[c][3] += w * x[3];
}

fn texel(i: u32) -> vec4<f32> {
    let row_mask = (1u << p.texel_row_shift) - 1u;
    return textureLoad(weight, vec2(i & row_mask, i >> p.texel_row_shift), 0);
}

// One tap for all BLOCK_C channels: their weights are the BLOCK_C / 4 texels from `at`.
fn tap(at: u32, x: array<vec4<f32>, 4>) {
    let w0 = texel(at + 0u);
    let w1 = texel(at + 1u);
    let w2 = texel(at + 2u);
    let w3 = texel(at + 3u);
    let w4 = texel(at + 4u);
    let w5 = texel(at + 5u);
    let w6 = texel(at + 6u);
    let w7 = texel(at + 7u);
    channel_fma(0u, w0.x, x);
    channel_fma(1u, w0.y, x);
    channel_fma(2u, w0.z, x);
    channel_fma(3u, w0.w, x);
    channel_fma(4u, w1.x, x);
    channel_fma(5u, w1.y, x);
    channel_fma(6u, w1.z, x);
    channel_fma(7u, w1.w, x);
    channel_fma(8u, w2.x, x);
    channel_fma(9u, w2.y, x);
    channel_fma(10u, w2.z, x);
    channel_fma(11u, w2.w, x);
    channel_fma(12u, w3.x, x);
    channel_fma(13u, w3.y, x);
    channel_fma(14u, w3.z, x);
    channel_fma(15u, w3.w, x);
    channel_fma(16u, w4.x, x);
    channel_fma(17u, w4.y, x);
    channel_fma(18u, w4.z, x);
    channel_fma(19u, w4.w, x);
    channel_fma(20u, w5.x, x);
    channel_fma(21u, w5.y, x);
    channel_fma(22u, w5.z, x);
    channel_fma(23u, w5.w, x);
    channel_fma(24u, w6.x, x);
    channel_fma(25u, w6.y, x);
    channel_fma(26u, w6.z, x);
    channel_fma(27u, w6.w, x);
    channel_fma(28u, w7.x, x);
    channel_fma(29u, w7.y, x);
    channel_fma(30u, w7.z, x);
    channel_fma(31u, w7.w, x);
}

// Columns kx..kx + 3 of a window row of BLOCK_X + 2 columns (held in 2 vec4, the last 2 lanes
// zero and never loaded).
fn shifted(v: array<vec4<f32>, 2>, kx: u32) -> vec4<f32> {
    switch kx {
        case 0u: {
            return v[0];
        }
        case 1u: {
            return vec4(v[0].yzw, v[1].x);
        }
        default: {
            return vec4(v[0].zw, v[1].xy);
        }
    }
}

// The tap (ky, kx) of the 3x3 path (weights from texel `at`): window rows ky..ky + 3
// (r0..r3), each shifted by kx.
fn window_tap(
    at: u32,
    r0: array<vec4<f32>, 2>,
    r1: array<vec4<f32>, 2>,
    r2: array<vec4<f32>, 2>,
    r3: array<vec4<f32>, 2>,
    kx: u32,
) {
    tap(at, array(shifted(r0, kx), shifted(r1, kx), shifted(r2, kx), shifted(r3, kx)));
}

// Window columns (col, valid) of one input row, masked by the row's own validity.
fn window_row(
    at: u32,
    row_ok: bool,
    col: array<vec4<u32>, 2>,
    valid: array<vec4<bool>, 2>,
) -> array<vec4<f32>, 2> {
    let ok = vec4(row_ok);
    let last = vec2(input[at + col[1].x], input[at + col[1].y]);
    return array(
        load4(at, col[0], valid[0] & ok),
        select(vec4(0.0), vec4(last, 0.0, 0.0), valid[1] & ok),
    );
}

fn load4(at: u32, col: vec4<u32>, valid: vec4<bool>) -> vec4<f32> {
    let x = vec4(input[at + col.x], input[at + col.y], input[at + col.z], input[at + col.w]);
    return select(vec4(0.0), x, valid);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn conv2d(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let x_blocks = (p.w_out + BLOCK_X - 1u) / BLOCK_X;
    let y_blocks = (p.h_out + BLOCK_Y - 1u) / BLOCK_Y;
    let pixel_blocks = p.batch * y_blocks * x_blocks;
    let pixel_groups = (pixel_blocks + WORKGROUP_SIZE - 1u) / WORKGROUP_SIZE;
    let c_blocks = (p.c_out + BLOCK_C - 1u) / BLOCK_C;
    let wg = group.y * groups.x + group.x;
    let block = (wg % pixel_groups) * WORKGROUP_SIZE + local;
    if (wg >= pixel_groups * c_blocks || block >= pixel_blocks) {
        return;
    }
    let co0 = (wg / pixel_groups) * BLOCK_C;
    let ox0 = (block % x_blocks) * BLOCK_X;
    let oy0 = (block / x_blocks) % y_blocks * BLOCK_Y;
    let b = block / (x_blocks * y_blocks);

    let taps = p.kernel * p.kernel;
    // Texel of (this channel block, input channel 0, tap 0); BLOCK_C / 4 texels per (channel, tap).
    let w_base = (co0 / BLOCK_C) * p.c_in * taps * 8u;
    let shift = vec4(p.upsample);
    let h_virtual = i32(p.h_in << p.upsample);
    let w_virtual = i32(p.w_in << p.upsample);
    let in_plane = p.h_in * p.w_in;
    let image = b * p.c_in * in_plane;
    let pad = i32(p.pad);
    let lanes = vec4(0, 1, 2, 3);

    if (p.kernel == 3u && p.stride == 1u) {
        // Window: virtual rows oy0 - pad + 0..5, columns ox0 - pad + 0..5.
        let ix0 = i32(ox0) - pad + lanes;
        let ix1 = ix0 + 4;
        let cv0 = ix0 >= vec4(0) & ix0 < vec4(w_virtual);
        let cv1 = ix1 >= vec4(0) & ix1 < vec4(w_virtual) & lanes < vec4(2);
        let cv = array(cv0, cv1);
        let col = array(
            select(vec4(0u), vec4<u32>(ix0) >> shift, cv0),
            select(vec4(0u), vec4<u32>(ix1) >> shift, cv1),
        );
        let iy0 = i32(oy0) - pad + lanes;
        let iy1 = iy0 + 4;
        let rv0 = iy0 >= vec4(0) & iy0 < vec4(h_virtual);
        let rv1 = iy1 >= vec4(0) & iy1 < vec4(h_virtual);
        let row0 = image + select(vec4(0u), vec4<u32>(iy0) >> shift, rv0) * p.w_in;
        let row1 = image + select(vec4(0u), vec4<u32>(iy1) >> shift, rv1) * p.w_in;
        var at = w_base;
        for (var ci = 0u; ci < p.c_in; ci++) {
            let ci_at = ci * in_plane;
            let x0 = window_row(row0.x + ci_at, rv0.x, col, cv);
            let x1 = window_row(row0.y + ci_at, rv0.y, col, cv);
            let x2 = window_row(row0.z + ci_at, rv0.z, col, cv);
            let x3 = window_row(row0.w + ci_at, rv0.w, col, cv);
            let x4 = window_row(row1.x + ci_at, rv1.x, col, cv);
            let x5 = window_row(row1.y + ci_at, rv1.y, col, cv);
            window_tap(at, x0, x1, x2, x3, 0u);
            window_tap(at + 8u, x0, x1, x2, x3, 1u);
            window_tap(at + 16u, x0, x1, x2, x3, 2u);
            window_tap(at + 24u, x1, x2, x3, x4, 0u);
            window_tap(at + 32u, x1, x2, x3, x4, 1u);
            window_tap(at + 40u, x1, x2, x3, x4, 2u);
            window_tap(at + 48u, x2, x3, x4, x5, 0u);
            window_tap(at + 56u, x2, x3, x4, x5, 1u);
            window_tap(at + 64u, x2, x3, x4, x5, 2u);
            at += 72u;
        }
    } else {
        for (var ky = 0u; ky < p.kernel; ky++) {
            let iy = vec4<i32>((oy0 + vec4(0u, 1u, 2u, 3u)) * p.stride + ky) - pad;
            let rv = iy >= vec4(0) & iy < vec4(h_virtual);
            let row = image + select(vec4(0u), vec4<u32>(iy) >> shift, rv) * p.w_in;
            for (var kx = 0u; kx < p.kernel; kx++) {
                let ix = vec4<i32>((ox0 + vec4(0u, 1u, 2u, 3u)) * p.stride + kx) - pad;
                let cv = ix >= vec4(0) & ix < vec4(w_virtual);
                let col = select(vec4(0u), vec4<u32>(ix) >> shift, cv);
                var w_at = w_base + 8u * (ky * p.kernel + kx);
                for (var ci = 0u; ci < p.c_in; ci++) {
                    let at = row + ci * in_plane;
                    tap(w_at, array(
                        load4(at.x, col, cv & vec4(rv.x)),
                        load4(at.y, col, cv & vec4(rv.y)),
                        load4(at.z, col, cv & vec4(rv.z)),
                        load4(at.w, col, cv & vec4(rv.w)),
                    ));
                    w_at += 8u * taps;
                }
            }
        }
    }

    store_channel(b, co0, oy0, ox0, acc[0]);
    store_channel(b, co0 + 1u, oy0, ox0, acc[1]);
    store_channel(b, co0 + 2u, oy0, ox0, acc[2]);
    store_channel(b, co0 + 3u, oy0, ox0, acc[3]);
    store_channel(b, co0 + 4u, oy0, ox0, acc[4]);
    store_channel(b, co0 + 5u, oy0, ox0, acc[5]);
    store_channel(b, co0 + 6u, oy0, ox0, acc[6]);
    store_channel(b, co0 + 7u, oy0, ox0, acc[7]);
    store_channel(b, co0 + 8u, oy0, ox0, acc[8]);
    store_channel(b, co0 + 9u, oy0, ox0, acc[9]);
    store_channel(b, co0 + 10u, oy0, ox0, acc[10]);
    store_channel(b, co0 + 11u, oy0, ox0, acc[11]);
    store_channel(b, co0 + 12u, oy0, ox0, acc[12]);
    store_channel(b, co0 + 13u, oy0, ox0, acc[13]);
    store_channel(b, co0 + 14u, oy0, ox0, acc[14]);
    store_channel(b, co0 + 15u, oy0, ox0, acc[15]);
    store_channel(b, co0 + 16u, oy0, ox0, acc[16]);
    store_channel(b, co0 + 17u, oy0, ox0, acc[17]);
    store_channel(b, co0 + 18u, oy0, ox0, acc[18]);
    store_channel(b, co0 + 19u, oy0, ox0, acc[19]);
    store_channel(b, co0 + 20u, oy0, ox0, acc[20]);
    store_channel(b, co0 + 21u, oy0, ox0, acc[21]);
    store_channel(b, co0 + 22u, oy0, ox0, acc[22]);
    store_channel(b, co0 + 23u, oy0, ox0, acc[23]);
    store_channel(b, co0 + 24u, oy0, ox0, acc[24]);
    store_channel(b, co0 + 25u, oy0, ox0, acc[25]);
    store_channel(b, co0 + 26u, oy0, ox0, acc[26]);
    store_channel(b, co0 + 27u, oy0, ox0, acc[27]);
    store_channel(b, co0 + 28u, oy0, ox0, acc[28]);
    store_channel(b, co0 + 29u, oy0, ox0, acc[29]);
    store_channel(b, co0 + 30u, oy0, ox0, acc[30]);
    store_channel(b, co0 + 31u, oy0, ox0, acc[31]);
}

// Writes one output channel's block: v in the layout of acc[c].
fn store_channel(b: u32, co: u32, oy0: u32, ox0: u32, v: array<vec4<f32>, 4>) {
    if (co >= p.c_out) {
        return;
    }
    let add = channel_offset(b, co);
    store4(b, co, oy0, ox0, v[0] + add);
    store4(b, co, oy0 + 1u, ox0, v[1] + add);
    store4(b, co, oy0 + 2u, ox0, v[2] + add);
    store4(b, co, oy0 + 3u, ox0, v[3] + add);
}

// What channel co of image b adds to every output: its bias and time-embedding term.
fn channel_offset(b: u32, co: u32) -> f32 {
    var add = bias[co];
    if (p.has_temb == 1u) {
        add += temb[b * p.temb_stride + co];
    }
    return add;
}

// Writes columns ox0..ox0 + 3 of output row oy (with the residual when fused), skipping those
// past the edges.
fn store4(b: u32, co: u32, oy: u32, ox0: u32, v: vec4<f32>) {
    if (oy >= p.h_out) {
        return;
    }
    let base = ((b * p.c_out + co) * p.h_out + oy) * p.w_out;
    for (var j = 0u; j < 4u; j++) {
        let ox = ox0 + j;
        if (ox >= p.w_out) {
            return;
        }
        var y = v[j];
        if (p.has_residual == 1u) {
            y = (residual[base + ox] + y) * p.output_scale;
        }
        output[base + ox] = y;
    }
}

// The small-block variant, for GPUs (the register blocks above leave most of a GPU idle and
// serialise too much work per invocation): one invocation per 4 output channels x 4 columns of one
// output row, flat index over (b, channel quad, row, column quad), column quad fastest. Same
// bindings, parameters, weight layout and fusions as `conv2d`.
@compute @workgroup_size(WORKGROUP_SIZE)
fn conv2d_small(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let x_quads = (p.w_out + 3u) / 4u;
    let c_quads = (p.c_out + 3u) / 4u;
    let index = (group.y * groups.x + group.x) * WORKGROUP_SIZE + local;
    if (index >= p.batch * c_quads * p.h_out * x_quads) {
        return;
    }
    let ox0 = (index % x_quads) * 4u;
    let oy = (index / x_quads) % p.h_out;
    let co0 = (index / (x_quads * p.h_out)) % c_quads * 4u;
    let b = index / (x_quads * p.h_out * c_quads);
    let taps = p.kernel * p.kernel;
    // This channel quad's texel for (ci, tap) is w_base + (ci * taps + tap) * BLOCK_C / 4.
    let w_base = (co0 / BLOCK_C) * p.c_in * taps * (BLOCK_C / 4u) + (co0 % BLOCK_C) / 4u;
    let h_virtual = i32(p.h_in << p.upsample);
    let w_virtual = i32(p.w_in << p.upsample);
    let pad = i32(p.pad);
    // sums[j]: channels co0..co0 + 3 at column ox0 + j.
    var sums = array<vec4<f32>, 4>();
    for (var ci = 0u; ci < p.c_in; ci++) {
        for (var ky = 0u; ky < p.kernel; ky++) {
            let iy = i32(oy * p.stride + ky) - pad;
            if (iy < 0 || iy >= h_virtual) {
                continue;
            }
            let row = ((b * p.c_in + ci) * p.h_in + (u32(iy) >> p.upsample)) * p.w_in;
            for (var kx = 0u; kx < p.kernel; kx++) {
                let w = texel(w_base + (ci * taps + ky * p.kernel + kx) * (BLOCK_C / 4u));
                for (var j = 0u; j < 4u; j++) {
                    let ix = i32((ox0 + j) * p.stride + kx) - pad;
                    if (ix >= 0 && ix < w_virtual) {
                        sums[j] += w * input[row + (u32(ix) >> p.upsample)];
                    }
                }
            }
        }
    }
    for (var c = 0u; c < 4u; c++) {
        let co = co0 + c;
        if (co >= p.c_out) {
            return;
        }
        let v = vec4(sums[0][c], sums[1][c], sums[2][c], sums[3][c]);
        store4(b, co, oy, ox0, v + channel_offset(b, co));
    }
}
