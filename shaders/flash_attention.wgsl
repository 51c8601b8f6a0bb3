// Multi-head attention softmax(scale * Q K^T [+ causal mask]) V in one kernel that never
// writes the scores ("flash" attention): keys are processed in tiles of 16 with a running row
// maximum, a running row sum and an output accumulator rescaled per tile (online softmax), all
// in f32. No workgroup memory and no barriers (both are emulated and costly on CPU Vulkan,
// see benches/NOTES.md), so every invocation works alone.
//
// Bindings (group 0):
//   0 params  uniform FlashParams (below)
//   1 q       storage read f32: the queries
//   2 k       storage read f32: the keys
//   3 v       storage read f32: the values (q, k and v may be one tensor, e.g. a fused qkv)
//   4 out     storage read_write f32: the output, also the accumulator between key tiles
//
// register_block.wgsl is appended: the Operand struct and the 16 x 16 block product.
//
// Tensor layout: every operand is addressed through an Operand of strides, so one entry point
// serves the spatial block's channel-major fused qkv [B, 3C, N] (token stride 1, channel
// stride N) and the transformer's token-major rows [B, T, C] (token stride C, channel stride
// 1). Element (token t, channel c) of slice s = b * heads + h is at
//   offset + (s / heads) * batch + (s % heads) * head + t * row + c * col
// (`slice` is 0: rows are tokens, columns channels).
//
// Work split: one invocation computes 16 queries of one slice, for `channels` consecutive
// output channels of the head (a chunk; the host uses the whole head_dim unless the dispatch
// would be too small to fill the device). Per tile of 16 keys it
//   1. computes the 16 x 16 scores in registers over the whole head_dim (16 query and 16 key
//      loads per 256 FMAs: register_block.wgsl's block_product into `acc`),
//   2. updates each row's running max m and sum l, turns the scores into p = exp(s - m) and
//      keeps the factor exp(m_old - m_new) for the rows' previous output,
//   3. for each channel of its chunk: out = out * factor + p V (16 value loads, 16 output
//      loads and 16 stores per 256 FMAs), reading the output only from the second tile on.
// The running output lives in the output tensor itself, owned by this invocation (no other
// invocation touches those elements), so any head_dim works (the VAE's single 512-channel
// head) with no register accumulator over head_dim and no recomputed scores; the last tile
// folds 1 / l into its factors, so no separate normalising pass is needed. Splitting the
// channels into chunks recomputes the scores per chunk: the host does it only for dispatches
// that would otherwise leave the device idle.
//
// Invocations run over (slice, query block, channel chunk), chunk fastest; the flat index is
// (workgroup.y * num_workgroups.x + workgroup.x) * WORKGROUP_SIZE + local (the grid is folded
// into 2-D when it exceeds the per-dimension limit). Queries past the end load clamped
// addresses and skip their stores; keys past the end of the ragged last tile, and keys after
// the query under the causal mask, get p = 0. With the causal mask a query block stops at the
// tile holding its last query.

struct FlashParams {
    // Query and key tokens per slice, channels per head, heads.
    queries: u32,
    keys: u32,
    head_dim: u32,
    heads: u32,
    // (b, h) slices, and output channels per invocation (a chunk of head_dim).
    slices: u32,
    channels: u32,
    // Factor applied to every score (1 / sqrt(head_dim)).
    scale: f32,
    // 1: key j is masked for query i when j > i (a causal self-attention).
    causal: u32,
    q: Operand,
    k: Operand,
    v: Operand,
    out: Operand,
}

@group(0) @binding(0) var<uniform> p: FlashParams;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// Invocations per workgroup, set per adapter at pipeline creation (the spec's
// WorkgroupSize::PerAdapter, from Tuning::block_workgroup_size: 16 on CPU adapters, 64 on GPUs).
override WORKGROUP_SIZE: u32 = 16u;
// Queries per invocation and keys per tile.
const BLOCK: u32 = 16u;
const LOWEST: f32 = -3.0e38;

// acc (register_block.wgsl), acc[4 * i + g]: query i of the block, keys 4 * g + 0..3 of the
// tile; the scores, then p.

// Per query of the block: running max, running sum, and the factor for its previous output.
var<private> row_max: array<f32, 16>;
var<private> row_sum: array<f32, 16>;
var<private> factor: array<f32, 16>;

// The loads of block_product: queries on the left, keys (the columns of K^T) on the right.
fn load_left(at: vec4<u32>) -> vec4<f32> {
    return vec4(q[at.x], q[at.y], q[at.z], q[at.w]);
}

fn load_right(at: vec4<u32>) -> vec4<f32> {
    return vec4(k[at.x], k[at.y], k[at.z], k[at.w]);
}

fn load_v(at: vec4<u32>) -> vec4<f32> {
    return vec4(v[at.x], v[at.y], v[at.z], v[at.w]);
}

fn max4(x: vec4<f32>) -> f32 {
    return max(max(x.x, x.y), max(x.z, x.w));
}

fn sum4(x: vec4<f32>) -> f32 {
    return x.x + x.y + x.z + x.w;
}

// The online-softmax update of row i (query `query`) for the tile of keys from j0; `first`:
// no previous max and sum; `last`: the row's sum is final, so 1 / sum goes into p and the
// factor.
fn softmax_row(i: u32, query: u32, j0: u32, first: bool, last: bool) {
    let limit = vec4(select(p.keys, min(p.keys, query + 1u), p.causal == 1u));
    let keys = vec4(j0) + vec4(0u, 1u, 2u, 3u);
    let valid0 = keys < limit;
    let valid1 = keys + 4u < limit;
    let valid2 = keys + 8u < limit;
    let valid3 = keys + 12u < limit;
    let low = vec4(LOWEST);
    let x0 = select(low, p.scale * acc[4u * i], valid0);
    let x1 = select(low, p.scale * acc[4u * i + 1u], valid1);
    let x2 = select(low, p.scale * acc[4u * i + 2u], valid2);
    let x3 = select(low, p.scale * acc[4u * i + 3u], valid3);
    let old_max = select(row_max[i], LOWEST, first);
    let old_sum = select(row_sum[i], 0.0, first);
    let new_max = max(old_max, max(max(max4(x0), max4(x1)), max(max4(x2), max4(x3))));
    let zero = vec4(0.0);
    let m = vec4(new_max);
    var p0 = select(zero, exp(x0 - m), valid0);
    var p1 = select(zero, exp(x1 - m), valid1);
    var p2 = select(zero, exp(x2 - m), valid2);
    var p3 = select(zero, exp(x3 - m), valid3);
    var f = exp(old_max - new_max);
    let sum = old_sum * f + (sum4(p0) + sum4(p1)) + (sum4(p2) + sum4(p3));
    row_max[i] = new_max;
    row_sum[i] = sum;
    if (last) {
        let inv = 1.0 / sum;
        f *= inv;
        p0 *= inv;
        p1 *= inv;
        p2 *= inv;
        p3 *= inv;
    }
    factor[i] = f;
    acc[4u * i] = p0;
    acc[4u * i + 1u] = p1;
    acc[4u * i + 2u] = p2;
    acc[4u * i + 3u] = p3;
}

// out[at] = out[at] * factor + p V for row i (the old value is not read on the first tile).
fn accumulate(i: u32, at: u32, y: array<vec4<f32>, 4>, first: bool) {
    var o = (dot(acc[4u * i], y[0]) + dot(acc[4u * i + 1u], y[1]))
        + (dot(acc[4u * i + 2u], y[2]) + dot(acc[4u * i + 3u], y[3]));
    if (!first) {
        o += factor[i] * out[at];
    }
    out[at] = o;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn flash_attention(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let chunks = (p.head_dim + p.channels - 1u) / p.channels;
    let query_blocks = (p.queries + BLOCK - 1u) / BLOCK;
    let index = (group.y * groups.x + group.x) * WORKGROUP_SIZE + local;
    if (index >= p.slices * query_blocks * chunks) {
        return;
    }
    let c0 = (index % chunks) * p.channels;
    let c1 = min(c0 + p.channels, p.head_dim);
    let t0 = (index / chunks) % query_blocks * BLOCK;
    let z = index / (chunks * query_blocks);

    let last_query = p.queries - 1u;
    let last_key = p.keys - 1u;
    let q_rows = block_lines(slice_base(p.q, z, p.heads), t0, last_query, p.q.row);
    let v_base = slice_base(p.v, z, p.heads);
    let out_base = slice_base(p.out, z, p.heads);
    // Keys needed by the block: all of them, or up to its last query under the causal mask.
    let end = select(p.keys, min(p.keys, min(t0 + BLOCK, p.queries)), p.causal == 1u);

    for (var j0 = 0u; j0 < end; j0 += BLOCK) {
        // 1. Scores of the tile, unscaled.
        acc = array<vec4<f32>, 64>();
        let k_rows = block_lines(slice_base(p.k, z, p.heads), j0, last_key, p.k.row);
        block_product(q_rows, p.q.col, k_rows, p.k.col, p.head_dim);

        // 2. Online softmax, row by row.
        let first = j0 == 0u;
        let last = j0 + BLOCK >= end;
        softmax_row(0u, min(t0, last_query), j0, first, last);
        softmax_row(1u, min(t0 + 1u, last_query), j0, first, last);
        softmax_row(2u, min(t0 + 2u, last_query), j0, first, last);
        softmax_row(3u, min(t0 + 3u, last_query), j0, first, last);
        softmax_row(4u, min(t0 + 4u, last_query), j0, first, last);
        softmax_row(5u, min(t0 + 5u, last_query), j0, first, last);
        softmax_row(6u, min(t0 + 6u, last_query), j0, first, last);
        softmax_row(7u, min(t0 + 7u, last_query), j0, first, last);
        softmax_row(8u, min(t0 + 8u, last_query), j0, first, last);
        softmax_row(9u, min(t0 + 9u, last_query), j0, first, last);
        softmax_row(10u, min(t0 + 10u, last_query), j0, first, last);
        softmax_row(11u, min(t0 + 11u, last_query), j0, first, last);
        softmax_row(12u, min(t0 + 12u, last_query), j0, first, last);
        softmax_row(13u, min(t0 + 13u, last_query), j0, first, last);
        softmax_row(14u, min(t0 + 14u, last_query), j0, first, last);
        softmax_row(15u, min(t0 + 15u, last_query), j0, first, last);

        // 3. out = out * factor + p V over the chunk's channels, rows past the end skipped.
        let rows = min(BLOCK, p.queries - t0);
        let v_rows = block_lines(v_base, j0, last_key, p.v.row);
        for (var c = c0; c < c1; c++) {
            let cv = vec4(c * p.v.col);
            let y = array(
                load_v(v_rows[0] + cv),
                load_v(v_rows[1] + cv),
                load_v(v_rows[2] + cv),
                load_v(v_rows[3] + cv),
            );
            let at = out_base + t0 * p.out.row + c * p.out.col;
            accumulate_rows(rows, at, y, first);
        }
    }
}

// `accumulate` for the first `rows` rows of the block (fewer than 16 in a ragged last block).
fn accumulate_rows(rows: u32, at: u32, y: array<vec4<f32>, 4>, first: bool) {
    if (rows > 0u) { accumulate(0u, at, y, first); }
    if (rows > 1u) { accumulate(1u, at + p.out.row, y, first); }
    if (rows > 2u) { accumulate(2u, at + 2u * p.out.row, y, first); }
    if (rows > 3u) { accumulate(3u, at + 3u * p.out.row, y, first); }
    if (rows > 4u) { accumulate(4u, at + 4u * p.out.row, y, first); }
    if (rows > 5u) { accumulate(5u, at + 5u * p.out.row, y, first); }
    if (rows > 6u) { accumulate(6u, at + 6u * p.out.row, y, first); }
    if (rows > 7u) { accumulate(7u, at + 7u * p.out.row, y, first); }
    if (rows > 8u) { accumulate(8u, at + 8u * p.out.row, y, first); }
    if (rows > 9u) { accumulate(9u, at + 9u * p.out.row, y, first); }
    if (rows > 10u) { accumulate(10u, at + 10u * p.out.row, y, first); }
    if (rows > 11u) { accumulate(11u, at + 11u * p.out.row, y, first); }
    if (rows > 12u) { accumulate(12u, at + 12u * p.out.row, y, first); }
    if (rows > 13u) { accumulate(13u, at + 13u * p.out.row, y, first); }
    if (rows > 14u) { accumulate(14u, at + 14u * p.out.row, y, first); }
    if (rows > 15u) { accumulate(15u, at + 15u * p.out.row, y, first); }
}
