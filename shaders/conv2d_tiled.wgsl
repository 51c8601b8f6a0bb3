// 2-D convolution as a tiled implicit GEMM (the GPU kernel of the convolution family):
// out[m, n] = sum_k A[k, m] * B[k, n] with m = output channel (M = C_out),
// n = (b, oy, ox) (N = B * H_out * W_out) and k = (ci, ky, kx) (K = C_in * kernel^2, PyTorch's
// weight order). B is never stored: each element is gathered from the input as it is loaded
// (im2col on the fly), with the fusions of conv2d.wgsl: zero padding (`pad` before, implied
// after), stride, a nearest 2x upsample of the input, and a channel concatenation of two
// inputs (channels 0..c_first from `input`, the rest from `second`: the up blocks' skip
// concatenation, without a concat dispatch), a group norm of the input (with its FiLM terms
// and SiLU: the coefficients group_norm.wgsl's `group_norm_coefficients` computed, applied to
// each gathered value, so the normalised tensor is never written); and in the epilogue the
// bias, the time-embedding term and the scaled residual sum.
//
// A kernel's source is three files: an operand prelude, this file (what every body shares: the
// parameters, the bindings, the gather with its fusions, the store with its epilogue and
// split-K's reduction) and the body with the `conv2d_tiled` entry point, the K loop over
// workgroup tiles: conv2d_tiled_fma.wgsl (each invocation sums its outputs with f32 FMAs; every
// adapter) or conv2d_tiled_coop.wgsl (each subgroup multiplies f16 fragments with cooperative
// matrices, the adapter's tensor cores).
//
// Bindings (group 0):
//   0 params    uniform TiledConvParams
//   1 input     storage read f32 [B, c_first, H_in, W_in] (conv2d_tiled_reduce: the partials)
//   2 second    storage read f32 [B, C_in - c_first, H_in, W_in] (read when c_first < C_in)
//   3 weight    storage read vec4<Operand> [K_pad, m_vec4]: A[k, 4q..4q+3] at k * m_vec4 + q,
//               prepacked at load (crate::nn::conv::tiled::pack_weights); rows past K zero,
//               channels past C_out zero, K_pad a multiple of BK
//   4 bias      storage read f32 [C_out]
//   5 temb      storage read f32 [B, temb_stride]: added at [b, c] when has_temb = 1
//   6 residual  storage read f32 [B, C_out, H_out, W_out]: when has_residual = 1 the output is
//               (residual + conv) * output_scale
//   7 output    storage read_write f32 [B, C_out, H_out, W_out]; with split_k > 1, the raw
//               partial sums [split_k, B, C_out, H_out, W_out] instead
//   8 norm      storage read vec4<f32> [B, C_in]: when input_norm > 0, input channel c of image
//               b is read as y = (x - mean) * scale + shift with (mean, scale, shift, _) =
//               norm[b * C_in + c], then SiLU when input_norm = 2; zero padding stays zero
//
// Workgroup w (folded over x and y when the grid exceeds the per-dimension limit) is split
// w / (m_tiles * n_tiles), channel tile (w / n_tiles) % m_tiles, pixel tile w % n_tiles. Split
// s covers K steps s * steps_per_split .. min(k_steps, (s + 1) * steps_per_split) and, when
// split_k > 1, writes its partial sums to its own slice of `output`; conv2d_tiled_reduce then
// adds the slices in split order and applies the epilogue (no atomics: WGSL has no float
// atomics, and a fixed summation order keeps the result bitwise reproducible).
//
// Operands: the prelude defines `Operand`, the type of the weights in memory and of both
// workgroup tiles: conv2d_tiled_f32.wgsl (f32, the default) or conv2d_tiled_f16.wgsl and the
// cooperative-matrix preludes conv2d_tiled_coop8.wgsl / conv2d_tiled_coop16.wgsl (`enable
// f16;`, Precision::Mixed: half the weight bytes and the tile memory; gathered activations
// rounded to f16 as they are staged). Products are taken and accumulated in f32 either way (an
// f16 x f16 product is exact in f32), and the epilogue, the split-K partials and the output are
// f32. With f32 operands every conversion is the identity.

struct TiledConvParams {
    batch: u32,
    c_in: u32,
    c_first: u32,
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
    k_total: u32,
    m_vec4: u32,
    k_steps: u32,
    steps_per_split: u32,
    split_k: u32,
    m_tiles: u32,
    n_tiles: u32,
    out_len: u32,
    // 0: the input as stored; 1: group-normalised through `norm`; 2: normalised, then SiLU.
    input_norm: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: TiledConvParams;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read> second: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<vec4<Operand>>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> temb: array<f32>;
@group(0) @binding(6) var<storage, read> residual: array<f32>;
@group(0) @binding(7) var<storage, read_write> output: array<f32>;
@group(0) @binding(8) var<storage, read> norm: array<vec4<f32>>;

override TILE_M: u32 = 64u;
override TILE_N: u32 = 64u;
const BK: u32 = 16u;
// Invocations per workgroup of conv2d_tiled_reduce.
const REDUCE_THREADS: u32 = 256u;

// What one workgroup computes: its K split, the first output channel m0 and GEMM column n0 of
// its tile, and the K steps first_step .. first_step + steps (the decomposition of the header).
struct TileWork {
    split: u32,
    m0: u32,
    n0: u32,
    first_step: u32,
    steps: u32,
}

// The work of workgroup `wg`, one of m_tiles * n_tiles * split_k.
fn tile_work(wg: u32) -> TileWork {
    let tiles = p.m_tiles * p.n_tiles;
    let split = wg / tiles;
    let tile = wg % tiles;
    let first_step = split * p.steps_per_split;
    return TileWork(
        split,
        (tile / p.n_tiles) * TILE_M,
        (tile % p.n_tiles) * TILE_N,
        first_step,
        min(p.k_steps, first_step + p.steps_per_split) - first_step,
    );
}

// This invocation's pixel of the B tile it loads (column local % TILE_N): whether it exists,
// its image and the input coordinates of its tap (0, 0), and its images' bases in both inputs.
var<private> g_valid: bool;
var<private> g_iy0: i32;
var<private> g_ix0: i32;
var<private> g_first: u32;
var<private> g_second: u32;
var<private> g_norm: u32;

fn setup_gather(n: u32) {
    let plane_out = p.h_out * p.w_out;
    g_valid = n < p.batch * plane_out;
    let b = n / plane_out;
    let pix = n % plane_out;
    g_iy0 = i32((pix / p.w_out) * p.stride) - i32(p.pad);
    g_ix0 = i32((pix % p.w_out) * p.stride) - i32(p.pad);
    let plane_in = p.h_in * p.w_in;
    g_first = b * p.c_first * plane_in;
    g_second = b * (p.c_in - p.c_first) * plane_in;
    g_norm = b * p.c_in;
}

// Input channel ci's value x as the convolution reads it: with the group norm of the input
// when input_norm > 0, in group_norm.wgsl's expression and order.
fn prologue(x: f32, ci: u32) -> f32 {
    if (p.input_norm == 0u) {
        return x;
    }
    let c = norm[g_norm + ci];
    var y = (x - c.x) * c.y + c.z;
    if (p.input_norm == 2u) {
        y = y / (1.0 + exp(-y));
    }
    return y;
}

// B[k, this invocation's pixel]: the input value under tap k, zero outside the image and K.
fn gather(k: u32) -> f32 {
    if (!g_valid || k >= p.k_total) {
        return 0.0;
    }
    let taps = p.kernel * p.kernel;
    let ci = k / taps;
    let t = k - ci * taps;
    let ky = t / p.kernel;
    let kx = t - ky * p.kernel;
    let iy = g_iy0 + i32(ky);
    let ix = g_ix0 + i32(kx);
    if (iy < 0 || ix < 0 || iy >= i32(p.h_in << p.upsample) || ix >= i32(p.w_in << p.upsample)) {
        return 0.0;
    }
    let at = ((u32(iy) >> p.upsample) * p.w_in) + (u32(ix) >> p.upsample);
    let plane_in = p.h_in * p.w_in;
    if (ci < p.c_first) {
        return prologue(input[g_first + ci * plane_in + at], ci);
    }
    return prologue(second[g_second + (ci - p.c_first) * plane_in + at], ci);
}

// The i-th vec4 of A this invocation loads for the K step at row k0: element
// e = local + i * THREADS of the BK x TILE_M / 4 tile.
fn load_a(k0: u32, m0: u32, e: u32) -> vec4<Operand> {
    let row = e / (TILE_M / 4u);
    let q = m0 / 4u + e % (TILE_M / 4u);
    if (q >= p.m_vec4) {
        return vec4<Operand>();
    }
    return weight[(k0 + row) * p.m_vec4 + q];
}

// The i-th word of B this invocation loads: row (local + i * THREADS) / TILE_N of the tile.
fn load_b(k0: u32, e: u32) -> Operand {
    return Operand(gather(k0 + e / TILE_N));
}

// Stores the sum v of output channel co at GEMM column n: the finished output, or split
// `split`'s partial sum when K is split. Nothing outside the output.
fn store_output(split: u32, co: u32, n: u32, v: f32) {
    let plane = p.h_out * p.w_out;
    if (n >= p.batch * plane || co >= p.c_out) {
        return;
    }
    let b = n / plane;
    let i = (b * p.c_out + co) * plane + n % plane;
    if (p.split_k > 1u) {
        output[split * p.out_len + i] = v;
    } else {
        output[i] = epilogue(v, b, co, i);
    }
}

// The fused epilogue of conv2d.wgsl, in its order: (sum + (bias + temb)), then the residual
// sum and scale.
fn epilogue(sum: f32, b: u32, co: u32, i: u32) -> f32 {
    var add = bias[co];
    if (p.has_temb == 1u) {
        add += temb[b * p.temb_stride + co];
    }
    var y = sum + add;
    if (p.has_residual == 1u) {
        y = (residual[i] + y) * p.output_scale;
    }
    return y;
}

// Split-K's second dispatch: output[i] = epilogue(sum over splits s = 0.. of
// partials[s * out_len + i]), one invocation per output element (the partials are `input`).
@compute @workgroup_size(REDUCE_THREADS)
fn conv2d_tiled_reduce(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = (group.y * groups.x + group.x) * REDUCE_THREADS + local;
    if (i >= p.out_len) {
        return;
    }
    var sum = input[i];
    for (var s = 1u; s < p.split_k; s++) {
        sum += input[s * p.out_len + i];
    }
    let plane = p.h_out * p.w_out;
    output[i] = epilogue(sum, i / (plane * p.c_out), (i / plane) % p.c_out, i);
}
