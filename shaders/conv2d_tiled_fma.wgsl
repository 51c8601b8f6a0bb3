// The FMA body of conv2d_tiled.wgsl (every adapter): the products summed invocation by
// invocation in f32. Compiled after an operand prelude and conv2d_tiled.wgsl; see that file.
//
// Work mapping: a workgroup computes a TILE_M x TILE_N output tile (override constants, set per
// variant at pipeline creation; THREADS = TILE_M * TILE_N / 16), each invocation 4 channels x 4
// pixels in four named vec4 accumulators (acc_j: channels tm*4..+3 of pixel tn + j * TILE_N/4;
// pixels strided by TILE_N / 4 so that neighbouring invocations read neighbouring words of the
// B tile and store neighbouring output pixels). K is walked in steps of BK = 16 through two
// workgroup-memory buffers per operand: while step s is multiplied out of one buffer, step
// s + 1 is loaded from global memory into registers and then stored into the other buffer, so
// one barrier per K step suffices. Both tiles are stored k-major and every access is a
// contiguous run of words across neighbouring invocations (A: vec4 rows, read as broadcasts;
// B: rows of TILE_N words written and read consecutively), so no bank conflicts arise and the
// rows are not padded (a pad would also push the 64x64 tile's 16 KiB double buffer past
// WebGPU's 16 KiB minimum of workgroup storage).
//
override THREADS: u32 = 256u;

// Two buffers of BK rows: TILE_M / 4 vec4 (at most 16) of A, TILE_N words (at most 64) of B.
var<workgroup> a_tile: array<vec4<Operand>, 512>;
var<workgroup> b_tile: array<Operand, 2048>;

@compute @workgroup_size(THREADS)
fn conv2d_tiled(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let wg = group.y * groups.x + group.x;
    if (wg >= p.m_tiles * p.n_tiles * p.split_k) {
        return;
    }
    let work = tile_work(wg);
    setup_gather(work.n0 + local % TILE_N);
    let tn = local % (TILE_N / 4u);
    let tm = local / (TILE_N / 4u);
    // Per invocation and K step: A_LOADS vec4 of A (1 or 2), B_LOADS words of B (4 or 8).
    let a_loads = BK * TILE_M / 4u / THREADS;
    let b_loads = BK * TILE_N / THREADS;
    let a_half = BK * (TILE_M / 4u);
    let b_half = BK * TILE_N;

    // Step 0 straight into buffer 0.
    var k0 = work.first_step * BK;
    var ra0 = load_a(k0, work.m0, local);
    var ra1 = vec4<Operand>();
    if (a_loads == 2u) {
        ra1 = load_a(k0, work.m0, local + THREADS);
    }
    var rb0 = load_b(k0, local);
    var rb1 = load_b(k0, local + THREADS);
    var rb2 = load_b(k0, local + 2u * THREADS);
    var rb3 = load_b(k0, local + 3u * THREADS);
    var rb4 = Operand();
    var rb5 = Operand();
    var rb6 = Operand();
    var rb7 = Operand();
    if (b_loads == 8u) {
        rb4 = load_b(k0, local + 4u * THREADS);
        rb5 = load_b(k0, local + 5u * THREADS);
        rb6 = load_b(k0, local + 6u * THREADS);
        rb7 = load_b(k0, local + 7u * THREADS);
    }
    a_tile[local] = ra0;
    if (a_loads == 2u) {
        a_tile[local + THREADS] = ra1;
    }
    b_tile[local] = rb0;
    b_tile[local + THREADS] = rb1;
    b_tile[local + 2u * THREADS] = rb2;
    b_tile[local + 3u * THREADS] = rb3;
    if (b_loads == 8u) {
        b_tile[local + 4u * THREADS] = rb4;
        b_tile[local + 5u * THREADS] = rb5;
        b_tile[local + 6u * THREADS] = rb6;
        b_tile[local + 7u * THREADS] = rb7;
    }
    workgroupBarrier();

    var acc0 = vec4(0.0);
    var acc1 = vec4(0.0);
    var acc2 = vec4(0.0);
    var acc3 = vec4(0.0);
    for (var s = 0u; s < work.steps; s++) {
        let cur = s & 1u;
        let more = s + 1u < work.steps;
        // Prefetch step s + 1 into registers; the loads are in flight during the FMAs below.
        if (more) {
            k0 += BK;
            ra0 = load_a(k0, work.m0, local);
            if (a_loads == 2u) {
                ra1 = load_a(k0, work.m0, local + THREADS);
            }
            rb0 = load_b(k0, local);
            rb1 = load_b(k0, local + THREADS);
            rb2 = load_b(k0, local + 2u * THREADS);
            rb3 = load_b(k0, local + 3u * THREADS);
            if (b_loads == 8u) {
                rb4 = load_b(k0, local + 4u * THREADS);
                rb5 = load_b(k0, local + 5u * THREADS);
                rb6 = load_b(k0, local + 6u * THREADS);
                rb7 = load_b(k0, local + 7u * THREADS);
            }
        }
        let a_at = cur * a_half + tm;
        let b_at = cur * b_half + tn;
        for (var kk = 0u; kk < BK; kk++) {
            let a = vec4<f32>(a_tile[a_at + kk * (TILE_M / 4u)]);
            let row = b_at + kk * TILE_N;
            acc0 += a * f32(b_tile[row]);
            acc1 += a * f32(b_tile[row + TILE_N / 4u]);
            acc2 += a * f32(b_tile[row + TILE_N / 2u]);
            acc3 += a * f32(b_tile[row + 3u * (TILE_N / 4u)]);
        }
        // Buffer cur ^ 1 was last read in step s - 1, before the previous barrier.
        if (more) {
            let a_next = (cur ^ 1u) * a_half;
            let b_next = (cur ^ 1u) * b_half;
            a_tile[a_next + local] = ra0;
            if (a_loads == 2u) {
                a_tile[a_next + local + THREADS] = ra1;
            }
            b_tile[b_next + local] = rb0;
            b_tile[b_next + local + THREADS] = rb1;
            b_tile[b_next + local + 2u * THREADS] = rb2;
            b_tile[b_next + local + 3u * THREADS] = rb3;
            if (b_loads == 8u) {
                b_tile[b_next + local + 4u * THREADS] = rb4;
                b_tile[b_next + local + 5u * THREADS] = rb5;
                b_tile[b_next + local + 6u * THREADS] = rb6;
                b_tile[b_next + local + 7u * THREADS] = rb7;
            }
        }
        workgroupBarrier();
    }

    let co0 = work.m0 + tm * 4u;
    let n = work.n0 + tn;
    store_pixel(work.split, co0, n, acc0);
    store_pixel(work.split, co0, n + TILE_N / 4u, acc1);
    store_pixel(work.split, co0, n + TILE_N / 2u, acc2);
    store_pixel(work.split, co0, n + 3u * (TILE_N / 4u), acc3);
}

// Stores channels co0..co0 + 3 of GEMM column n.
fn store_pixel(split: u32, co0: u32, n: u32, v: vec4<f32>) {
    for (var c = 0u; c < 4u; c++) {
        store_output(split, co0 + c, n, v[c]);
    }
}
