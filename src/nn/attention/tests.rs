//! The fused attention kernel against an f64 host reference, through both callers' addressing
//! (token rows as CLIP reads them, channel-major [B, 3C, N] as the spatial block does, and
//! channel-major queries with token-row keys and values as the transformer does): several heads, head_dim 33 (a ragged channel chunk), 40, 64 and 512,
//! queries != keys, the causal mask, several key tiles with a ragged last one, whole and
//! split channel chunks on both kernel sets, and a device whose storage binding limit is
//! below one slice's scores. Also `bench`'s GEMM ceiling (`plain_matmul`), which shares the
//! register block, against an f64 product.

use super::*;
use crate::error::Error;
use crate::gpu::Gpu;
use crate::gpu::{BlockSize, GpuOptions, Tuning};
use crate::nn::{rel_l2, run_and_read};

/// Deterministic values in ±amplitude.
fn values(len: usize, seed: u64, amplitude: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * amplitude
        })
        .collect()
}

/// One attention to check; the layout is token-major unless `channel_major`.
#[derive(Debug, Clone, Copy)]
struct Case {
    shape: AttentionShape,
    channel_major: bool,
}

const fn case(
    [batch, queries, keys, heads, head_dim]: [usize; 5],
    causal: bool,
    channel_major: bool,
) -> Case {
    Case {
        shape: AttentionShape {
            batch,
            queries,
            keys,
            heads,
            head_dim,
            causal,
        },
        channel_major,
    }
}

const CASES: &[Case] = &[
    // SD 1.5's first transformer: head_dim 40; 53 tokens: 4 key tiles, the last one of 5.
    case([2, 53, 53, 3, 40], false, false),
    // Cross-attention: 45 queries (a ragged query block), 77 keys.
    case([2, 45, 77, 2, 40], false, false),
    // CLIP: causal, head_dim 64.
    case([2, 77, 77, 2, 64], true, false),
    // Odd head_dim: chunks of 17 and 16 channels when split.
    case([1, 20, 35, 2, 33], false, false),
    // The spatial block: one 512-channel head (the VAE), channel-major; and two heads of 48.
    case([2, 37, 37, 1, 512], false, true),
    case([1, 70, 70, 2, 48], false, true),
    // The transformer's cross-attention: channel-major queries, token-row keys and values.
    case([2, 45, 77, 2, 40], false, true),
];

/// softmax(q k^T / sqrt(d) [+ mask]) v in f64, as [batch, heads, queries, head_dim].
fn reference(
    shape: AttentionShape,
    q: impl Fn(usize, usize, usize, usize) -> f64,
    k: impl Fn(usize, usize, usize, usize) -> f64,
    v: impl Fn(usize, usize, usize, usize) -> f64,
) -> Vec<f64> {
    let d = shape.head_dim;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = Vec::new();
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            for i in 0..shape.queries {
                let keys = if shape.causal { i + 1 } else { shape.keys };
                let scores: Vec<f64> = (0..keys)
                    .map(|j| scale * (0..d).map(|c| q(b, h, i, c) * k(b, h, j, c)).sum::<f64>())
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = weights.iter().sum();
                for c in 0..d {
                    let o: f64 = weights
                        .iter()
                        .enumerate()
                        .map(|(j, w)| w * v(b, h, j, c))
                        .sum();
                    out.push(o / sum);
                }
            }
        }
    }
    out
}

/// The case on `gpu`, and the f64 reference, both as [batch, heads, queries, head_dim].
fn run(gpu: &Gpu, case: Case) -> (Vec<f32>, Vec<f64>) {
    let s = case.shape;
    let c = s.heads * s.head_dim;
    let mut graph = GraphBuilder::new(gpu);
    // Token-major: self-attention reads one fused [B, T, 3C] tensor (q, k, v side by side),
    // cross-attention q [B, Tq, C] and kv [B, Tk, 2C]. Channel-major: self-attention qkv
    // [B, 3C, N]; cross-attention (the transformer's) q [B, C, Tq] and kv token rows
    // [B, Tk, 2C].
    let layout = if case.channel_major {
        AttentionLayout::ChannelMajor
    } else {
        AttentionLayout::TokenRows
    };
    let (inputs, parts) = if s.queries == s.keys {
        let len = s.batch * s.queries * 3 * c;
        let qkv = graph.input(len, "qkv").unwrap();
        let part = |first| match layout {
            AttentionLayout::ChannelMajor => AttentionOperand::Channels {
                tensor: qkv,
                first,
                channels: 3 * c,
            },
            AttentionLayout::TokenRows => AttentionOperand::Tokens {
                tensor: qkv,
                offset: first,
                row: 3 * c,
            },
        };
        (vec![(qkv, len)], [part(0), part(c), part(2 * c)])
    } else {
        let lens = [s.batch * s.queries * c, s.batch * s.keys * 2 * c];
        let q = graph.input(lens[0], "q").unwrap();
        let kv = graph.input(lens[1], "kv").unwrap();
        let kv_part = |offset| AttentionOperand::Tokens {
            tensor: kv,
            offset,
            row: 2 * c,
        };
        let q_part = match layout {
            AttentionLayout::ChannelMajor => AttentionOperand::Channels {
                tensor: q,
                first: 0,
                channels: c,
            },
            AttentionLayout::TokenRows => AttentionOperand::Tokens {
                tensor: q,
                offset: 0,
                row: c,
            },
        };
        (
            vec![(q, lens[0]), (kv, lens[1])],
            [q_part, kv_part(0), kv_part(c)],
        )
    };
    let out = multihead_attention(&mut graph, parts, layout, s).unwrap();
    graph.mark_output(out);
    let graph = graph.finish();
    // Values in ±3, so that the scaled scores spread over several units (the running max
    // moves between tiles).
    let data: Vec<Vec<f32>> = inputs
        .iter()
        .enumerate()
        .map(|(i, &(_, len))| values(len, 7 + i as u64, 3.0))
        .collect();
    for (&(id, _), values) in inputs.iter().zip(&data) {
        gpu.queue()
            .write_buffer(graph.buffer(id), 0, bytemuck::cast_slice(values));
    }
    let len = s.batch * s.queries * c;
    let got = run_and_read(gpu, &graph, out, len);

    // Element (b, h, t, channel) of q (part 0), k (1) or v (2).
    let at = |part: usize, b: usize, h: usize, t: usize, ch: usize| -> f64 {
        let ch = h * s.head_dim + ch;
        let x = if s.queries == s.keys && case.channel_major {
            data[0][(b * 3 * c + part * c + ch) * s.queries + t]
        } else if s.queries == s.keys {
            data[0][(b * s.queries + t) * 3 * c + part * c + ch]
        } else if part == 0 && case.channel_major {
            data[0][(b * c + ch) * s.queries + t]
        } else if part == 0 {
            data[0][(b * s.queries + t) * c + ch]
        } else {
            data[1][(b * s.keys + t) * 2 * c + (part - 1) * c + ch]
        };
        f64::from(x)
    };
    let want = reference(
        s,
        |b, h, t, ch| at(0, b, h, t, ch),
        |b, h, t, ch| at(1, b, h, t, ch),
        |b, h, t, ch| at(2, b, h, t, ch),
    );
    // The output as [batch, heads, queries, head_dim].
    let mut ordered = Vec::with_capacity(len);
    for b in 0..s.batch {
        for h in 0..s.heads {
            for t in 0..s.queries {
                for ch in 0..s.head_dim {
                    let ch = h * s.head_dim + ch;
                    ordered.push(if case.channel_major {
                        got[(b * c + ch) * s.queries + t]
                    } else {
                        got[(b * s.queries + t) * c + ch]
                    });
                }
            }
        }
    }
    (ordered, want)
}

#[test]
fn the_fused_kernel_matches_an_f64_attention_on_both_layouts_and_kernel_sets() {
    let gpu_tuning = Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu);
    let tunings = [
        // The CPU set: whole heads except where the dispatch is under 8 workgroups.
        Tuning::for_device_type(wgpu::DeviceType::Cpu),
        // The GPU set: these small dispatches split every head into chunks of >= 16 channels.
        gpu_tuning,
        // Never split.
        Tuning {
            split_k_below_workgroups: 0,
            ..gpu_tuning
        },
    ];
    assert_eq!(tunings[0].block_size, BlockSize::Large);
    let mut gpu = Some(Gpu::new(&GpuOptions::default()).unwrap());
    for tuning in tunings {
        let device = gpu.take().unwrap().with_tuning(tuning);
        for &case in CASES {
            let (got, want) = run(&device, case);
            let error = rel_l2(&got, &want);
            eprintln!(
                "{:?} / {}: {case:?}: {error:.2e}",
                tuning.block_size, tuning.split_k_below_workgroups
            );
            assert!(error < 2e-6, "{tuning:?}: {case:?}: {error:.2e}");
        }
        device.wait_idle("attention test").unwrap();
        gpu = Some(device);
    }
}

#[test]
fn no_scores_tensor_is_needed_when_one_slice_of_scores_exceeds_the_binding_limit() {
    let limit = 256 << 10;
    let options = GpuOptions {
        limits: Some(wgpu::Limits {
            max_storage_buffer_binding_size: limit,
            ..wgpu::Limits::default()
        }),
        ..GpuOptions::default()
    };
    let gpu = Gpu::new(&options).unwrap();
    // 300 x 300 scores of one slice: 360,000 bytes, over the 262,144-byte limit (qkv:
    // 115,200 bytes).
    let case = case([1, 300, 300, 2, 16], true, false);
    let s = case.shape;
    let scores = GraphBuilder::new(&gpu).tensor(s.queries * s.keys, "one slice of scores");
    assert!(matches!(scores, Err(Error::TooLarge { .. })));
    let (got, want) = run(&gpu, case);
    let error = rel_l2(&got, &want);
    eprintln!("{case:?}: {error:.2e}");
    assert!(error < 2e-6, "{error:.2e}");
}

/// `plain_matmul` (bench's GEMM ceiling, the same 16 x 16 register block as the scores): two
/// slices of ragged 37 x 45 x 19 against an f64 product.
#[test]
fn the_gemm_ceiling_matches_an_f64_product() {
    let gpu = Gpu::new(&GpuOptions::default()).unwrap();
    let (count, m, n, k) = (2, 37, 45, 19);
    let shape = MatmulShape {
        count: count as u64,
        m: m as u64,
        n: n as u64,
        k: k as u64,
    };
    let mut graph = GraphBuilder::new(&gpu);
    let a = graph.input(count * m * k, "a").unwrap();
    let b = graph.input(count * k * n, "b").unwrap();
    let c = graph.tensor(count * m * n, "c").unwrap();
    graph.mark_output(c);
    plain_matmul(&mut graph, shape, [a, b, c]);
    let graph = graph.finish();
    let (a_values, b_values) = (values(count * m * k, 3, 1.0), values(count * k * n, 4, 1.0));
    gpu.queue()
        .write_buffer(graph.buffer(a), 0, bytemuck::cast_slice(&a_values));
    gpu.queue()
        .write_buffer(graph.buffer(b), 0, bytemuck::cast_slice(&b_values));
    let got = run_and_read(&gpu, &graph, c, count * m * n);
    let mut want = Vec::with_capacity(count * m * n);
    for z in 0..count {
        for row in 0..m {
            for col in 0..n {
                want.push(
                    (0..k)
                        .map(|i| {
                            f64::from(a_values[(z * m + row) * k + i])
                                * f64::from(b_values[(z * k + i) * n + col])
                        })
                        .sum::<f64>(),
                );
            }
        }
    }
    let error = rel_l2(&got, &want);
    eprintln!("gemm: {error:.2e}");
    assert!(error < 1e-6, "{error:.2e}");
}
