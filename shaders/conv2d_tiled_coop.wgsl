// The cooperative-matrix body of conv2d_tiled.wgsl (Precision::Mixed on adapters with
// cooperative matrices: the tensor cores): compiled after a conv2d_tiled_coop*.wgsl prelude
// (FRAG, the fragment size, and the fragment types FragA / FragB / FragC) and
// conv2d_tiled.wgsl; see that file for the GEMM, the gather and the epilogue.
//
// Work mapping: a workgroup computes a TILE_M x TILE_N output tile with one subgroup per block
// of 2 x 2 fragments (2 FRAG x 2 FRAG outputs): subgroup s takes block row s / (TILE_N / BLOCK)
// and block column s % (TILE_N / BLOCK), so THREADS = blocks x SUBGROUP_SIZE, the adapter's
// subgroup size (an override constant: the Rust side uses this body only where the subgroup
// size is fixed, and where THREADS is a multiple of TILE_N, so that each invocation gathers one
// pixel column of the B tile). K is walked in steps of BK = 16 through two f16 workgroup
// buffers per operand, one barrier per step: step s + 1 is gathered into one buffer while step
// s's fragments are multiplied out of the other. A is stored in rows of a_row = TILE_M + PAD
// (element (k, m) at k * a_row + m: an A fragment, rows m and columns k, loads column-major
// with stride a_row), B in rows of b_row = TILE_N + PAD (element (k, n) at k * b_row + n: a B
// fragment, rows k and columns n, loads row-major with stride b_row). The pad of 8 values (16
// bytes: Vulkan wants fragment rows and strides 16-byte aligned) starts a fragment's rows in
// different memory banks instead of all in one (a 64-value f16 row is 128 bytes, the banks'
// full width).
// Every cooperative operation sits in workgroup-uniform control flow (constant trip counts;
// only the subgroup's block offsets differ between subgroups).
//
// Epilogue: each of a subgroup's four f32 accumulators is stored, row-major, to the
// subgroup's FRAG x FRAG slice of `c_tile`, and the subgroup's invocations then store it
// through store_output (bias, time embedding, residual; or split-K partials), neighbouring
// invocations on neighbouring pixels.

override SUBGROUP_SIZE: u32 = 32u;
// The outputs of one subgroup's block along each side: 2 x 2 fragments.
const BLOCK: u32 = 2u * FRAG;
override THREADS: u32 = (TILE_M / BLOCK) * (TILE_N / BLOCK) * SUBGROUP_SIZE;

// Values each tile row is padded by (see the header).
const PAD: u32 = 8u;
// Two buffers of BK rows of a_row (A) or b_row (B) values, at most 64 + PAD.
var<workgroup> a_tile: array<f16, 2304>;
var<workgroup> b_tile: array<f16, 2304>;
// One FRAG x FRAG slice per subgroup: TILE_M * TILE_N / 4 values at most.
var<workgroup> c_tile: array<f32, 1024>;

// Stores K step k0's A and B tiles into buffer `buffer`: this invocation's share of the BK x
// TILE_M / 4 vec4 of A and of the BK x TILE_N gathered values of B.
fn stage(k0: u32, m0: u32, buffer: u32, local: u32) {
    let a_row = TILE_M + PAD;
    let b_row = TILE_N + PAD;
    let a_base = buffer * BK * a_row;
    for (var e = local; e < BK * (TILE_M / 4u); e += THREADS) {
        let v = load_a(k0, m0, e);
        let at = a_base + (e / (TILE_M / 4u)) * a_row + (e % (TILE_M / 4u)) * 4u;
        a_tile[at] = v.x;
        a_tile[at + 1u] = v.y;
        a_tile[at + 2u] = v.z;
        a_tile[at + 3u] = v.w;
    }
    let b_base = buffer * BK * b_row;
    for (var e = local; e < BK * TILE_N; e += THREADS) {
        b_tile[b_base + (e / TILE_N) * b_row + e % TILE_N] = load_b(k0, e);
    }
}

@compute @workgroup_size(THREADS)
fn conv2d_tiled(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let wg = group.y * groups.x + group.x;
    if (wg >= p.m_tiles * p.n_tiles * p.split_k) {
        return;
    }
    let work = tile_work(wg);
    let a_row = TILE_M + PAD;
    let b_row = TILE_N + PAD;
    setup_gather(work.n0 + local % TILE_N);
    // This subgroup's block within the tile.
    let bm = (subgroup / (TILE_N / BLOCK)) * BLOCK;
    let bn = (subgroup % (TILE_N / BLOCK)) * BLOCK;

    var k0 = work.first_step * BK;
    stage(k0, work.m0, 0u, local);
    workgroupBarrier();

    var acc00 = FragC();
    var acc01 = FragC();
    var acc10 = FragC();
    var acc11 = FragC();
    for (var s = 0u; s < work.steps; s++) {
        let cur = s & 1u;
        // Gather step s + 1 into the other buffer, last read in step s - 1, before the
        // previous barrier.
        if (s + 1u < work.steps) {
            k0 += BK;
            stage(k0, work.m0, cur ^ 1u, local);
        }
        for (var kf = 0u; kf < BK; kf += FRAG) {
            let a_at = cur * BK * a_row + kf * a_row + bm;
            let b_at = cur * BK * b_row + kf * b_row + bn;
            let a0 = coopLoad<FragA>(&a_tile[a_at], a_row);
            let a1 = coopLoad<FragA>(&a_tile[a_at + FRAG], a_row);
            let b0 = coopLoadT<FragB>(&b_tile[b_at], b_row);
            let b1 = coopLoadT<FragB>(&b_tile[b_at + FRAG], b_row);
            acc00 = coopMultiplyAdd(a0, b0, acc00);
            acc01 = coopMultiplyAdd(a0, b1, acc01);
            acc10 = coopMultiplyAdd(a1, b0, acc10);
            acc11 = coopMultiplyAdd(a1, b1, acc11);
        }
        workgroupBarrier();
    }

    let m = work.m0 + bm;
    let n = work.n0 + bn;
    store_fragment(acc00, subgroup, lane, work.split, m, n);
    store_fragment(acc01, subgroup, lane, work.split, m, n + FRAG);
    store_fragment(acc10, subgroup, lane, work.split, m + FRAG, n);
    store_fragment(acc11, subgroup, lane, work.split, m + FRAG, n + FRAG);
}

// Stores the fragment of output channels m.. and GEMM columns n.. through this subgroup's
// slice of c_tile. Called in workgroup-uniform control flow (it holds barriers).
fn store_fragment(acc: FragC, subgroup: u32, lane: u32, split: u32, m: u32, n: u32) {
    let slice = subgroup * FRAG * FRAG;
    // The slice's previous fragment has been read by every invocation.
    workgroupBarrier();
    coopStoreT(acc, &c_tile[slice], FRAG);
    workgroupBarrier();
    for (var e = lane; e < FRAG * FRAG; e += SUBGROUP_SIZE) {
        store_output(split, m + e / FRAG, n + e % FRAG, c_tile[slice + e]);
    }
}
