// The 16 x 16 register block that attention.wgsl's `matmul` (one block of C) and
// flash_attention.wgsl (one tile of scores) share, appended to each of them: their strided
// operand addressing and the block product acc += L R.
//
// The shader it is appended to defines the two loads of the product, reading its own bindings:
//   fn load_left(at: vec4<u32>) -> vec4<f32>   four elements of the left operand L
//   fn load_right(at: vec4<u32>) -> vec4<f32>  four elements of the right operand R
//
// Per step of the inner dimension the block loads 16 values of L and 16 of R for 256 FMAs (on
// lavapipe every storage-buffer load costs far more than an FMA, and loops are not unrolled, so
// the block is written out by hand with constant indices; a loop indexing `acc` would put it in
// memory on several drivers).

// An operand's strides (src/nn/attention/mod.rs `Operand` mirrors it): element (r, c) of slice
// z = b * heads + h is at offset + (z / heads) * batch + (z % heads) * head + z * slice
// + r * row + c * col, so transposes, batched (b, h) slices and fused qkv tensors need no copies.
struct Operand {
    offset: u32,
    batch: u32,
    head: u32,
    slice: u32,
    row: u32,
    col: u32,
    _pad0: u32,
    _pad1: u32,
}

// acc[4 * r + q]: row r of the block, columns 4 * q + 0..3.
var<private> acc: array<vec4<f32>, 64>;

// Index of element (0, 0) of slice z of `o`, with `heads` heads per batch item.
fn slice_base(o: Operand, z: u32, heads: u32) -> u32 {
    return o.offset + (z / heads) * o.batch + (z % heads) * o.head + z * o.slice;
}

// Addresses of the 16 rows (or columns) first..first + 15 of an operand, 4 per vec4, each clamped
// to `last` (loads past an edge read the last one; their results are never stored).
fn block_lines(base: u32, first: u32, last: u32, stride: u32) -> array<vec4<u32>, 4> {
    let lanes = vec4(first) + vec4(0u, 1u, 2u, 3u);
    let end = vec4(last);
    return array(
        base + min(lanes, end) * stride,
        base + min(lanes + 4u, end) * stride,
        base + min(lanes + 8u, end) * stride,
        base + min(lanes + 12u, end) * stride,
    );
}

fn row_fma(r: u32, x: f32, y: array<vec4<f32>, 4>) {
    acc[4u * r] += x * y[0];
    acc[4u * r + 1u] += x * y[1];
    acc[4u * r + 2u] += x * y[2];
    acc[4u * r + 3u] += x * y[3];
}

// acc[r, c] += sum over d < depth of L(r, d) R(d, c). left[i]: addresses of rows 4i..4i+3 of L
// at d = 0, left_step: their step per d; right[i]: addresses of columns 4i..4i+3 of R at
// d = 0, right_step: their step per d.
fn block_product(
    left: array<vec4<u32>, 4>,
    left_step: u32,
    right: array<vec4<u32>, 4>,
    right_step: u32,
    depth: u32,
) {
    for (var d = 0u; d < depth; d++) {
        let dl = vec4(d * left_step);
        let dr = vec4(d * right_step);
        let x0 = load_left(left[0] + dl);
        let x1 = load_left(left[1] + dl);
        let x2 = load_left(left[2] + dl);
        let x3 = load_left(left[3] + dl);
        let y = array(
            load_right(right[0] + dr),
            load_right(right[1] + dr),
            load_right(right[2] + dr),
            load_right(right[3] + dr),
        );
        row_fma(0u, x0.x, y);
        row_fma(1u, x0.y, y);
        row_fma(2u, x0.z, y);
        row_fma(3u, x0.w, y);
        row_fma(4u, x1.x, y);
        row_fma(5u, x1.y, y);
        row_fma(6u, x1.z, y);
        row_fma(7u, x1.w, y);
        row_fma(8u, x2.x, y);
        row_fma(9u, x2.y, y);
        row_fma(10u, x2.z, y);
        row_fma(11u, x2.w, y);
        row_fma(12u, x3.x, y);
        row_fma(13u, x3.y, y);
        row_fma(14u, x3.z, y);
        row_fma(15u, x3.w, y);
    }
}
