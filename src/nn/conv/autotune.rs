//! Autotuning of the tiled convolution ([`Autotune`]): the first time a graph records a layer
//! shape, its candidate plans (tile x split-K factor, each valid for the shape and the
//! device's limits) are timed with timestamp queries on random data and the fastest is kept
//! (the shape rule's plan unless another is 5% faster) in the device's autotune cache, which
//! later graphs (and, through its file, later runs) reuse. So every model built on the device (U-Net, conditional U-Net, VAE) is tuned where
//! its graph is built, with nothing in the models themselves.
//!
//! A layer shape is the convolution's geometry (batch, channels of both inputs, sizes, kernel,
//! stride, padding, upsampling); the fused epilogue terms (bias, time embedding, residual) are
//! left out of the key and out of the measurement, as they cost the same under every plan.

use std::ops::Range;
use std::time::Instant;

use super::tiled::{self, PackedWeights, TilePlan, TiledConv};
use crate::error::Result;
use crate::gpu::{Autotune, ConvTiles, GemmTile, Gpu, GpuTensor, GpuTimer, TiledChoice};
use crate::nn::graph::{Graph, GraphBuilder};
use crate::nn::{RandomWeights, TensorSource};

/// How much faster than the shape rule's plan a candidate must be to replace it.
const MARGIN: f64 = 0.05;

/// The plan `conv` gets on `graph`'s device: the shape rule (autotune off, a forced tile, or
/// no timestamps), the cached choice, or the fastest candidate measured now.
pub(super) fn choose(graph: &GraphBuilder<'_>, conv: &TiledConv<'_>) -> Result<TilePlan> {
    let gpu = graph.gpu();
    let tuning = gpu.tuning();
    let gemm = conv.gemm();
    let max_split = conv.max_split(graph);
    let rule = tiled::plan(&tuning, gemm, max_split);
    let Some(cache) = gpu.autotune_cache() else {
        return Ok(rule);
    };
    if tuning.conv_tiles != ConvTiles::Auto {
        return Ok(rule);
    }
    let enough = tuning.split_k_below_workgroups as usize;
    let limits = gpu.limits();
    let max_invocations = limits
        .max_compute_invocations_per_workgroup
        .min(limits.max_compute_workgroup_size_x);
    let bounds = Bounds {
        max_split,
        max_invocations,
        enough,
    };
    let key = key(conv);
    if let Some(choice) = cache.get(&key) {
        let plan = tiled::split(choice.tile, choice.split_k as usize, gemm[2]);
        if candidates(Autotune::Full, gemm, bounds, rule).contains(&plan) {
            return Ok(plan);
        }
        log::warn!("autotune: the cached plan {choice:?} does not fit {key}; measuring again");
    }
    let Some(timer) = GpuTimer::new(gpu, 2)? else {
        cache.note_no_timer();
        return Ok(rule);
    };
    let start = Instant::now();
    let candidates = candidates(cache.mode(), gemm, bounds, rule);
    let deadline = cache.budget_left();
    let times = measure(gpu, conv, &candidates, cache.mode(), &timer, |spent| {
        deadline.is_none_or(|left| spent < left)
    })?;
    let fastest = candidates
        .iter()
        .zip(&times)
        .filter_map(|(plan, time)| time.map(|time| (*plan, time)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let rule_time = candidates
        .iter()
        .zip(&times)
        .find_map(|(plan, time)| (*plan == rule).then_some(*time).flatten());
    let (plan, measured) = match (fastest, rule_time) {
        // Within timing noise of the rule: the rule's plan (and its bits) stay.
        (Some((_, time)), Some(rule_time)) if time > rule_time * (1.0 - MARGIN) => (rule, true),
        (Some((plan, _)), _) => (plan, true),
        (None, _) => (rule, false),
    };
    let describe = |plan: &TilePlan| format!("{} split {}", plan.tile.name(), plan.split_k);
    let timings: Vec<String> = candidates
        .iter()
        .zip(&times)
        .filter_map(|(plan, time)| time.map(|t| format!("{} {:.3} ms", describe(plan), t * 1e3)))
        .collect();
    log::info!(
        "autotune {key}: {} ({})",
        describe(&plan),
        if measured {
            timings.join(", ")
        } else {
            "budget spent: the shape rule".to_string()
        }
    );
    let choice = TiledChoice {
        tile: plan.tile,
        split_k: plan.split_k as u32,
        measured,
    };
    cache.insert(key, choice, start.elapsed().as_secs_f64());
    Ok(plan)
}

/// What bounds a layer's candidates on a device.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// Most ways K may be split (the partials must fit one binding).
    max_split: usize,
    /// Most invocations per workgroup.
    max_invocations: u32,
    /// [`Tuning::split_k_below_workgroups`](crate::gpu::Tuning::split_k_below_workgroups).
    enough: usize,
}

/// The plans worth timing for an [m, n, k_steps] GEMM, the shape rule's first (when valid),
/// each with a tile the device can launch and a split whose partials fit: [`Autotune::Full`]
/// every tile and 1-16 ways; [`Autotune::Quick`] no 64-row tile for 32 channels or fewer,
/// splits of 2, 4 or 8 ways of at least 4 K steps each, only where the unsplit tile launches
/// fewer than `enough` workgroups.
fn candidates(mode: Autotune, gemm: [usize; 3], bounds: Bounds, rule: TilePlan) -> Vec<TilePlan> {
    let [m, n, k_steps] = gemm;
    let quick = mode != Autotune::Full;
    let (ways, min_steps): (&[usize], usize) = match quick {
        true => (&[1, 2, 4, 8], 4),
        false => (&[1, 2, 3, 4, 6, 8, 12, 16], 1),
    };
    let valid = |plan: &TilePlan| {
        plan.tile.invocations() <= bounds.max_invocations && plan.split_k <= bounds.max_split.max(1)
    };
    let mut plans: Vec<TilePlan> = valid(&rule).then_some(rule).into_iter().collect();
    for tile in GemmTile::ALL {
        if quick && tile == GemmTile::M64N64 && m <= 32 {
            continue;
        }
        for &ways in ways {
            let few_workgroups = tiled::tiles(tile, m, n) < bounds.enough;
            if ways > 1 && (k_steps / ways < min_steps || (quick && !few_workgroups)) {
                continue;
            }
            let plan = tiled::split(tile, ways.min(bounds.max_split.max(1)), k_steps);
            if valid(&plan) && !plans.contains(&plan) {
                plans.push(plan);
            }
        }
    }
    plans
}

/// The layer shape of `conv`, as the cache keys it.
fn key(conv: &TiledConv<'_>) -> String {
    let (h_in, w_in) = conv.in_size;
    let (h_out, w_out) = conv.out_size;
    format!(
        "b{} c{}+{} {h_in}x{w_in} -> c{} {h_out}x{w_out} k{} s{} p{}{}",
        conv.batch,
        conv.c_first,
        conv.c_in - conv.c_first,
        conv.c_out,
        conv.kernel,
        conv.stride,
        conv.pad,
        if conv.upsample { " up2" } else { "" },
    )
}

/// The median GPU seconds of each of `plans` for `conv`'s geometry on random data (without
/// its fused terms and input norm); `None` for the plans not measured because `go_on(seconds spent)` said
/// stop before them.
fn measure(
    gpu: &Gpu,
    conv: &TiledConv<'_>,
    plans: &[TilePlan],
    mode: Autotune,
    timer: &GpuTimer,
    go_on: impl Fn(f64) -> bool,
) -> Result<Vec<Option<f64>>> {
    let start = Instant::now();
    let (warm_ups, runs) = match mode {
        Autotune::Full => (1, 5),
        Autotune::Off | Autotune::Quick => (1, 3),
    };
    let mut random = RandomWeights::new(0);
    let k = conv.c_in * conv.kernel * conv.kernel;
    let weight = random.take("autotune weight", &[conv.c_out * k])?;
    let weights = PackedWeights::upload(gpu, &weight, conv.c_out, k, "autotune weight")?;
    let bias = GpuTensor::zeros(gpu, &[conv.c_out], "autotune bias")?;
    let probe = TiledConv {
        weights: &weights,
        bias: &bias,
        temb: None,
        residual: None,
        input_norm: None,
        ..*conv
    };
    let mut g = GraphBuilder::new(gpu);
    let (h_in, w_in) = conv.in_size;
    let pixels = conv.batch * h_in * w_in;
    let input = g.input(pixels * conv.c_first, "autotune input")?;
    let second = match conv.c_in - conv.c_first {
        0 => None,
        rest => Some(g.input(pixels * rest, "autotune second input")?),
    };
    let (h_out, w_out) = conv.out_size;
    let output = g.tensor(conv.batch * conv.c_out * h_out * w_out, "autotune output")?;
    g.mark_output(output);
    let mut ranges: Vec<Range<usize>> = Vec::with_capacity(plans.len());
    let mut first = 0;
    for &plan in plans {
        probe.record_plan(&mut g, plan, input, second, output, "autotune")?;
        ranges.push(first..first + plan.dispatches());
        first += plan.dispatches();
    }
    let graph = g.finish();
    for id in std::iter::once(input).chain(second) {
        let buffer = graph.buffer(id);
        let values = random.take("autotune input", &[buffer.size() as usize / 4])?;
        gpu.queue()
            .write_buffer(buffer, 0, bytemuck::cast_slice(&values));
    }
    let mut medians = Vec::with_capacity(plans.len());
    for ops in ranges {
        if !go_on(start.elapsed().as_secs_f64()) {
            medians.push(None);
            continue;
        }
        let mut times = Vec::with_capacity(runs);
        for run in 0..warm_ups + runs {
            let seconds = time_ops(gpu, &graph, ops.clone(), timer)?;
            if run >= warm_ups {
                times.push(seconds);
            }
        }
        times.sort_by(f64::total_cmp);
        medians.push(Some(times[times.len() / 2]));
    }
    Ok(medians)
}

/// GPU seconds of dispatches `ops` of `graph`, between two timestamps of one pass.
fn time_ops(gpu: &Gpu, graph: &Graph, ops: Range<usize>, timer: &GpuTimer) -> Result<f64> {
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        timer.stamp(&mut pass, 0);
        for op in ops {
            graph.record_op(&mut pass, op);
        }
        timer.stamp(&mut pass, 1);
    }
    gpu.queue().submit([encoder.finish()]);
    let seconds = timer.intervals(gpu, 2)?.first().copied().unwrap_or(0.0);
    gpu.check("autotuning a convolution")?;
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::Tuning;

    #[test]
    fn every_candidate_fits_the_shape_and_the_device_and_the_rule_comes_first() {
        let tuning = Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu);
        for mode in [Autotune::Quick, Autotune::Full] {
            for m in [3, 32, 33, 128, 320] {
                for n in [16, 64, 1024, 65536] {
                    for k_steps in [1, 2, 5, 9, 18, 72, 144] {
                        for max_split in [0, 1, 3, 8, 100] {
                            for max_invocations in [64, 128, 256] {
                                let bounds = Bounds {
                                    max_split,
                                    max_invocations,
                                    enough: tuning.split_k_below_workgroups as usize,
                                };
                                let gemm = [m, n, k_steps];
                                let rule = tiled::plan(&tuning, gemm, max_split);
                                let plans = candidates(mode, gemm, bounds, rule);
                                let case = format!("{mode:?} {gemm:?} {bounds:?}");
                                assert!(!plans.is_empty(), "{case}");
                                if rule.tile.invocations() <= max_invocations {
                                    assert_eq!(plans[0], rule, "{case}");
                                }
                                for (i, p) in plans.iter().enumerate() {
                                    assert!(p.tile.invocations() <= max_invocations, "{case}");
                                    assert!(p.split_k >= 1 && p.split_k <= max_split.max(1));
                                    assert!(p.split_k <= k_steps, "{case} {p:?}");
                                    assert!(p.steps_per_split * p.split_k >= k_steps);
                                    assert!(p.steps_per_split * (p.split_k - 1) < k_steps);
                                    assert!(!plans[..i].contains(p), "{case}: {p:?} twice");
                                    // What the cache stores gives the same plan back.
                                    let again = tiled::split(p.tile, p.split_k, k_steps);
                                    assert_eq!(again, *p, "{case}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn quick_splits_only_layers_that_launch_few_workgroups() {
        let tuning = Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu);
        let bounds = Bounds {
            max_split: 100,
            max_invocations: 256,
            enough: 256,
        };
        // 128 channels over 64 x 1024 pixels: plenty of workgroups, nothing split.
        let large = [128, 65536, 72];
        let plans = candidates(
            Autotune::Quick,
            large,
            bounds,
            tiled::plan(&tuning, large, 100),
        );
        assert_eq!(plans.len(), 3);
        assert!(plans.iter().all(|p| p.split_k == 1));
        // 256 channels at 4x4, batch 1: 8 workgroups, splits tried.
        let small = [256, 16, 144];
        let plans = candidates(
            Autotune::Quick,
            small,
            bounds,
            tiled::plan(&tuning, small, 100),
        );
        assert!(plans.iter().any(|p| p.split_k == 2));
        let full = candidates(
            Autotune::Full,
            small,
            bounds,
            tiled::plan(&tuning, small, 100),
        );
        assert!(full.len() > plans.len() && full.iter().any(|p| p.split_k == 16));
    }
}
