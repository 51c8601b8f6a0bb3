// Multi-head self-attention over the spatial tokens of an NCHW tensor:
// out[b, h*d + j, n] = sum_m softmax_m(scale * q[b, h, :, n] . k[b, h, :, m]) v[b, h*d + j, m],
// one workgroup per (query token n, head h, batch item b). Keys are visited in tiles of 64
// with an online softmax (running max and sum), so any token count works and no score matrix
// is stored.
//
// Bindings (group 0):
//   0 params  uniform AttentionParams { channels C = heads * head_dim, head_dim d, tokens N, scale }
//   1 qkv     storage read f32 [B, 3C, N]: q in channels [0, C), k in [C, 2C), v in [2C, 3C)
//             (the output of one fused 1x1 projection)
//   2 output  storage read_write f32 [B, C, N]
//
// Dispatch: (N, heads, B). head_dim must be at most 512 (8 values per thread).

struct AttentionParams {
    channels: u32,
    head_dim: u32,
    tokens: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: AttentionParams;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;

const TILE: u32 = 64u;
const DIMS_PER_THREAD: u32 = 8u;
const MAX_HEAD_DIM: u32 = 512u;
const LOWEST: f32 = -3.0e38;

var<workgroup> query: array<f32, MAX_HEAD_DIM>;
var<workgroup> weights: array<f32, TILE>;

@compute @workgroup_size(TILE)
fn attention(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let n = group.x;
    let head = group.y;
    let b = group.z;
    let tokens = p.tokens;
    let d = p.head_dim;
    let base = b * 3u * p.channels * tokens;
    let q_base = base + head * d * tokens;
    let k_base = q_base + p.channels * tokens;
    let v_base = k_base + p.channels * tokens;
    for (var j = local; j < d; j += TILE) {
        query[j] = qkv[q_base + j * tokens + n];
    }
    workgroupBarrier();

    var acc: array<f32, DIMS_PER_THREAD>;
    var running_max = LOWEST;
    var running_sum = 0.0;
    for (var start = 0u; start < tokens; start += TILE) {
        let m = start + local;
        var score = LOWEST;
        if (m < tokens) {
            var dot = 0.0;
            for (var j = 0u; j < d; j++) {
                dot += query[j] * qkv[k_base + j * tokens + m];
            }
            score = dot * p.scale;
        }
        weights[local] = score;
        workgroupBarrier();
        var tile_max = LOWEST;
        for (var e = 0u; e < TILE; e++) {
            tile_max = max(tile_max, weights[e]);
        }
        let new_max = max(running_max, tile_max);
        let correction = exp(running_max - new_max);
        workgroupBarrier();
        weights[local] = select(0.0, exp(score - new_max), m < tokens);
        workgroupBarrier();
        var tile_sum = 0.0;
        for (var e = 0u; e < TILE; e++) {
            tile_sum += weights[e];
        }
        running_sum = running_sum * correction + tile_sum;
        let count = min(TILE, tokens - start);
        for (var r = 0u; r < DIMS_PER_THREAD; r++) {
            let j = local + r * TILE;
            if (j < d) {
                var value = acc[r] * correction;
                let row = v_base + j * tokens + start;
                for (var e = 0u; e < count; e++) {
                    value += weights[e] * qkv[row + e];
                }
                acc[r] = value;
            }
        }
        running_max = new_max;
        workgroupBarrier();
    }
    let out_base = b * p.channels * tokens + head * d * tokens + n;
    for (var r = 0u; r < DIMS_PER_THREAD; r++) {
        let j = local + r * TILE;
        if (j < d) {
            output[out_base + j * tokens] = acc[r] / running_sum;
        }
    }
}
