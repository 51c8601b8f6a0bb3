// A batched, strided matrix product C = scale * A B (`matmul`): the GEMM ceiling `bench`
// compares the convolutions with (src/nn/profile.rs). The attention itself is the fused kernel
// in flash_attention.wgsl. register_block.wgsl is appended: the Operand struct and the 16 x 16
// block product.
//
// Bindings (group 0):
//   0 params  uniform AttentionParams (below)
//   1 a       storage read f32: the left operand A (M x K)
//   2 b       storage read f32: the right operand B (K x N)
//   3 c       storage read_write f32: the result C (M x N)
//
// Each operand is addressed through an Operand of strides (register_block.wgsl), so transposes
// and batched (b, h) slices need no copies.
//
// Work mapping: each invocation computes a register block of BLOCK_M rows x BLOCK_N columns
// (16 x 16) of one slice, accumulating in f32 over K (register_block.wgsl's block_product).
// Each invocation reads its operands straight from storage: sharing tiles through workgroup
// memory needs barriers, which cost more than the loads they save on lavapipe.
// Blocks run over (slice, row block, column block), column block fastest; the flat invocation
// index is (workgroup.y * num_workgroups.x + workgroup.x) * WORKGROUP_SIZE + local (the grid is
// folded into 2-D when it exceeds the per-dimension limit). Rows and columns past the edges load
// clamped addresses and skip their stores, so any M, N, K work.

struct AttentionParams {
    // C is M x N; K is the inner dimension.
    m: u32,
    n: u32,
    k: u32,
    heads: u32,
    slices: u32,
    // Factor applied to every product.
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    a: Operand,
    b: Operand,
    c: Operand,
}

@group(0) @binding(0) var<uniform> p: AttentionParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// Invocations per workgroup, set per adapter at pipeline creation (the spec's
// WorkgroupSize::PerAdapter, from Tuning::block_workgroup_size: 16 on CPU adapters, where it
// hardly matters, 64 on GPUs, two warps / one wavefront).
override WORKGROUP_SIZE: u32 = 16u;
const BLOCK_M: u32 = 16u;
const BLOCK_N: u32 = 16u;

// The flat invocation index.
fn flat(group: vec3<u32>, groups: vec3<u32>, local: u32) -> u32 {
    return (group.y * groups.x + group.x) * WORKGROUP_SIZE + local;
}

// The loads of register_block.wgsl's block_product: A on the left, B on the right.
fn load_left(at: vec4<u32>) -> vec4<f32> {
    return vec4(a[at.x], a[at.y], a[at.z], a[at.w]);
}

fn load_right(at: vec4<u32>) -> vec4<f32> {
    return vec4(b[at.x], b[at.y], b[at.z], b[at.w]);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn matmul(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let m_blocks = (p.m + BLOCK_M - 1u) / BLOCK_M;
    let n_blocks = (p.n + BLOCK_N - 1u) / BLOCK_N;
    let block = flat(group, groups, local);
    if (block >= p.slices * m_blocks * n_blocks) {
        return;
    }
    let n0 = (block % n_blocks) * BLOCK_N;
    let m0 = (block / n_blocks) % m_blocks * BLOCK_M;
    let z = block / (n_blocks * m_blocks);

    let a_rows = block_lines(slice_base(p.a, z, p.heads), m0, p.m - 1u, p.a.row);
    let b_cols = block_lines(slice_base(p.b, z, p.heads), n0, p.n - 1u, p.b.col);
    block_product(a_rows, p.a.col, b_cols, p.b.row, p.k);

    let c_base = slice_base(p.c, z, p.heads);
    store_row(c_base, m0, n0, array(acc[0], acc[1], acc[2], acc[3]));
    store_row(c_base, m0 + 1u, n0, array(acc[4], acc[5], acc[6], acc[7]));
    store_row(c_base, m0 + 2u, n0, array(acc[8], acc[9], acc[10], acc[11]));
    store_row(c_base, m0 + 3u, n0, array(acc[12], acc[13], acc[14], acc[15]));
    store_row(c_base, m0 + 4u, n0, array(acc[16], acc[17], acc[18], acc[19]));
    store_row(c_base, m0 + 5u, n0, array(acc[20], acc[21], acc[22], acc[23]));
    store_row(c_base, m0 + 6u, n0, array(acc[24], acc[25], acc[26], acc[27]));
    store_row(c_base, m0 + 7u, n0, array(acc[28], acc[29], acc[30], acc[31]));
    store_row(c_base, m0 + 8u, n0, array(acc[32], acc[33], acc[34], acc[35]));
    store_row(c_base, m0 + 9u, n0, array(acc[36], acc[37], acc[38], acc[39]));
    store_row(c_base, m0 + 10u, n0, array(acc[40], acc[41], acc[42], acc[43]));
    store_row(c_base, m0 + 11u, n0, array(acc[44], acc[45], acc[46], acc[47]));
    store_row(c_base, m0 + 12u, n0, array(acc[48], acc[49], acc[50], acc[51]));
    store_row(c_base, m0 + 13u, n0, array(acc[52], acc[53], acc[54], acc[55]));
    store_row(c_base, m0 + 14u, n0, array(acc[56], acc[57], acc[58], acc[59]));
    store_row(c_base, m0 + 15u, n0, array(acc[60], acc[61], acc[62], acc[63]));
}

// Writes scale * v to row `row`, columns n0..n0 + 15 of C, skipping those past the edges.
fn store_row(base: u32, row: u32, n0: u32, v: array<vec4<f32>, 4>) {
    if (row >= p.m) {
        return;
    }
    let at = base + row * p.c.row;
    for (var j = 0u; j < BLOCK_N; j++) {
        let col = n0 + j;
        if (col >= p.n) {
            return;
        }
        c[at + col * p.c.col] = p.scale * v[j / 4u][j % 4u];
    }
}
