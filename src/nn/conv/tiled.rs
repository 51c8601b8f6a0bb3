//! The tiled implicit-GEMM convolution (shaders/conv2d_tiled.wgsl), the GPU default
//! ([`BlockSize::Tiled`](crate::gpu::BlockSize::Tiled)): the weights prepacked once at load as
//! a [K_pad, C_out] matrix of vec4 rows, three tile variants through override constants, a
//! shape rule that picks one per layer, and split-K with a second, reducing dispatch.
//! The f16-operand variants of [`Precision::Mixed`](crate::Precision::Mixed) are in
//! [`super::precision`].

use super::super::ChannelTerm;
use super::super::graph::{GraphBuilder, MatmulShape, Resource, TensorId};
use super::super::norm::InputNorm;
use super::precision::Operand;
use crate::error::Result;
use crate::gpu::{Binding, ConvTiles, GemmTile, Gpu, GpuTensor, KernelSpec, Tuning, WorkgroupSize};
use crate::params_layout;

/// The shader with f32 operands (its prelude defines `Operand`) and the FMA body.
const SOURCE: &str = concat!(
    include_str!("../../../shaders/conv2d_tiled_f32.wgsl"),
    include_str!("../../../shaders/conv2d_tiled.wgsl"),
    include_str!("../../../shaders/conv2d_tiled_fma.wgsl")
);

/// Bindings of both entry points (see shaders/conv2d_tiled.wgsl).
const BINDINGS: &[Binding] = &[
    Binding::Uniform,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageRead,
    Binding::StorageReadWrite,
    Binding::StorageRead,
];

/// Rows of K per step of the shader (its BK); K is padded to a multiple of it.
pub(super) const K_STEP: usize = 16;

/// The override constants of each tile for the FMA body (4 x 4 outputs per invocation).
const FMA_64X64: WorkgroupSize =
    WorkgroupSize::Overrides(&[("TILE_M", 64.0), ("TILE_N", 64.0), ("THREADS", 256.0)]);
const FMA_32X64: WorkgroupSize =
    WorkgroupSize::Overrides(&[("TILE_M", 32.0), ("TILE_N", 64.0), ("THREADS", 128.0)]);
const FMA_32X32: WorkgroupSize =
    WorkgroupSize::Overrides(&[("TILE_M", 32.0), ("TILE_N", 32.0), ("THREADS", 64.0)]);

/// A tile variant of `conv2d_tiled` compiled from `source` (an operand prelude, the shared
/// part and a body): its name (the kernel cache's key) and its tile's overrides.
pub(super) const fn variant(
    source: &'static str,
    name: &'static str,
    workgroup_size: WorkgroupSize,
) -> KernelSpec {
    KernelSpec {
        name,
        source,
        entry_point: "conv2d_tiled",
        bindings: BINDINGS,
        params: Some(&PARAMS_LAYOUT),
        workgroup_size,
    }
}

/// The FMA body's variants of every tile ([`GemmTile::ALL`]'s order) from `source`, named
/// `names`.
pub(super) const fn fma_variants(
    source: &'static str,
    names: [&'static str; 3],
) -> [KernelSpec; 3] {
    [
        variant(source, names[0], FMA_64X64),
        variant(source, names[1], FMA_32X64),
        variant(source, names[2], FMA_32X32),
    ]
}

static TILED: [KernelSpec; 3] = fma_variants(
    SOURCE,
    [
        "conv2d_tiled_64x64",
        "conv2d_tiled_32x64",
        "conv2d_tiled_32x32",
    ],
);

/// Split-K's reduction: sums the partials in split order and applies the epilogue.
static REDUCE: KernelSpec = KernelSpec {
    name: "conv2d_tiled",
    source: SOURCE,
    entry_point: "conv2d_tiled_reduce",
    bindings: BINDINGS,
    params: Some(&PARAMS_LAYOUT),
    workgroup_size: WorkgroupSize::Fixed,
};

/// Every kernel of the tiled convolution.
#[cfg(test)]
pub(super) static SPECS: &[&KernelSpec] = &[&TILED[0], &TILED[1], &TILED[2], &REDUCE];

/// The kernel of `tile` among `variants` (three, in [`GemmTile::ALL`]'s order).
pub(super) fn of_tile(variants: &'static [KernelSpec; 3], tile: GemmTile) -> &'static KernelSpec {
    match tile {
        GemmTile::M64N64 => &variants[0],
        GemmTile::M32N64 => &variants[1],
        GemmTile::M32N32 => &variants[2],
    }
}

/// The f32-operand kernel of `tile`.
pub(super) fn spec(tile: GemmTile) -> &'static KernelSpec {
    of_tile(&TILED, tile)
}

/// Mirrors `TiledConvParams` in shaders/conv2d_tiled.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
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
    /// 0: none; 1: group-normalised input; 2: then SiLU.
    input_norm: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

static PARAMS_LAYOUT: crate::gpu::ParamsLayout = params_layout!(TiledConvParams {
    batch,
    c_in,
    c_first,
    h_in,
    w_in,
    c_out,
    h_out,
    w_out,
    kernel,
    stride,
    pad,
    upsample,
    has_temb,
    temb_stride,
    has_residual,
    output_scale,
    k_total,
    m_vec4,
    k_steps,
    steps_per_split,
    split_k,
    m_tiles,
    n_tiles,
    out_len,
    input_norm,
    _pad0,
    _pad1,
    _pad2,
});

/// Weights as conv2d_tiled.wgsl reads them: A[k, m] = weight[m, k] at k * m_vec4 * 4 + m,
/// rows padded to a multiple of 4 channels and to [`K_STEP`] rows, with zeros; stored as the
/// device's [`Operand`] type.
pub(super) struct PackedWeights {
    buffer: wgpu::Buffer,
    operand: Operand,
    /// vec4 per row: C_out / 4 rounded up.
    m_vec4: usize,
    /// K_pad / K_STEP.
    k_steps: usize,
}

/// The A matrix of `weight` [c_out, k] (PyTorch's order), as [`PackedWeights`] holds it.
pub(super) fn pack(weight: &[f32], c_out: usize, k: usize) -> (Vec<f32>, usize, usize) {
    let m_vec4 = c_out.div_ceil(4);
    let k_steps = k.div_ceil(K_STEP);
    let row = m_vec4 * 4;
    let mut packed = vec![0.0; k_steps * K_STEP * row];
    for m in 0..c_out {
        for kk in 0..k {
            packed[kk * row + m] = weight[m * k + kk];
        }
    }
    (packed, m_vec4, k_steps)
}

impl PackedWeights {
    pub fn upload(gpu: &Gpu, weight: &[f32], c_out: usize, k: usize, name: &str) -> Result<Self> {
        let (packed, m_vec4, k_steps) = pack(weight, c_out, k);
        let operand = Operand::of(gpu);
        Ok(Self {
            buffer: operand.upload(gpu, &packed, name)?,
            operand,
            m_vec4,
            k_steps,
        })
    }
}

/// The tile and K split of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TilePlan {
    pub tile: GemmTile,
    /// Ways K is split (every split non-empty).
    pub split_k: usize,
    /// K steps per split (the last may have fewer).
    pub steps_per_split: usize,
}

impl TilePlan {
    /// Dispatches [`TiledConv::record_plan`] records: the GEMM, and the reduction when K is
    /// split.
    pub fn dispatches(&self) -> usize {
        if self.split_k > 1 { 2 } else { 1 }
    }
}

/// Workgroups of `tile` over an [m, n] output.
pub(super) fn tiles(tile: GemmTile, m: usize, n: usize) -> usize {
    let (tm, tn) = tile.shape();
    m.div_ceil(tm) * n.div_ceil(tn)
}

/// `tile` with K split about `ways` ways.
pub(super) fn split(tile: GemmTile, ways: usize, k_steps: usize) -> TilePlan {
    let steps_per_split = k_steps.div_ceil(ways.clamp(1, k_steps.max(1))).max(1);
    TilePlan {
        tile,
        split_k: k_steps.div_ceil(steps_per_split).max(1),
        steps_per_split,
    }
}

/// The shape rule of [`ConvTiles::Auto`] (or the forced tile) for an [m, n] output over
/// `k_steps` steps of K, split at most `max_split` ways (the partials of a split must fit one
/// storage binding).
pub(super) fn plan(tuning: &Tuning, [m, n, k_steps]: [usize; 3], max_split: usize) -> TilePlan {
    let enough = tuning.split_k_below_workgroups as usize;
    let max_split = max_split.max(1);
    match tuning.conv_tiles {
        ConvTiles::Fixed { tile, split_k } => {
            split(tile, (split_k as usize).min(max_split), k_steps)
        }
        ConvTiles::Auto => {
            let fits = GemmTile::ALL
                .into_iter()
                .filter(|&tile| tile != GemmTile::M64N64 || m > 32)
                .find(|&tile| tiles(tile, m, n) >= enough);
            match fits {
                Some(tile) => split(tile, 1, k_steps),
                None => {
                    let launched = tiles(GemmTile::M32N32, m, n);
                    let ways = enough
                        .div_ceil(launched)
                        .min(8)
                        .min(k_steps / 4)
                        .min(max_split);
                    split(GemmTile::M32N32, ways, k_steps)
                }
            }
        }
    }
}

/// One convolution's geometry and fusions, as the tiled kernel runs it.
#[derive(Clone, Copy)]
pub(super) struct TiledConv<'a> {
    pub weights: &'a PackedWeights,
    pub bias: &'a GpuTensor,
    pub batch: usize,
    /// Input channels in total, and those read from the first input (the rest: the second).
    pub c_in: usize,
    pub c_first: usize,
    pub in_size: (usize, usize),
    pub c_out: usize,
    pub out_size: (usize, usize),
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub upsample: bool,
    pub temb: Option<ChannelTerm>,
    pub residual: Option<(TensorId, f32)>,
    /// The group norm applied to the input as it is gathered.
    pub input_norm: Option<InputNorm>,
}

impl TiledConv<'_> {
    /// The [m, n, k_steps] of this convolution's GEMM.
    pub fn gemm(&self) -> [usize; 3] {
        let (h_out, w_out) = self.out_size;
        [self.c_out, self.batch * h_out * w_out, self.weights.k_steps]
    }

    /// The most ways K may be split on `graph`'s device: the partials of every split must fit
    /// one storage binding.
    pub fn max_split(&self, graph: &GraphBuilder<'_>) -> usize {
        let (h_out, w_out) = self.out_size;
        let out_len = self.batch * self.c_out * h_out * w_out;
        let max_split = graph.max_binding_bytes() / (out_len as u64 * 4).max(1);
        usize::try_from(max_split).unwrap_or(usize::MAX)
    }

    /// Records the convolution of `input` (channels `0..c_first`) and `second` (the rest)
    /// into `output` with the plan the device's tuning picks (the shape rule, a forced tile,
    /// or the [`autotune`](super::autotune) choice): one dispatch, or two when K is split.
    pub fn record(
        &self,
        graph: &mut GraphBuilder<'_>,
        input: TensorId,
        second: Option<TensorId>,
        output: TensorId,
        name: &str,
    ) -> Result<()> {
        let plan = super::autotune::choose(graph, self)?;
        self.record_plan(graph, plan, input, second, output, name)
    }

    /// Records the convolution as [`TiledConv::record`] does, with `plan`.
    pub fn record_plan(
        &self,
        graph: &mut GraphBuilder<'_>,
        plan: TilePlan,
        input: TensorId,
        second: Option<TensorId>,
        output: TensorId,
        name: &str,
    ) -> Result<()> {
        let (h_out, w_out) = self.out_size;
        let n = self.batch * h_out * w_out;
        let k = self.c_in * self.kernel * self.kernel;
        let out_len = self.batch * self.c_out * h_out * w_out;
        let (tm, tn) = plan.tile.shape();
        let params = TiledConvParams {
            batch: self.batch as u32,
            c_in: self.c_in as u32,
            c_first: self.c_first as u32,
            h_in: self.in_size.0 as u32,
            w_in: self.in_size.1 as u32,
            c_out: self.c_out as u32,
            h_out: h_out as u32,
            w_out: w_out as u32,
            kernel: self.kernel as u32,
            stride: self.stride as u32,
            pad: self.pad as u32,
            upsample: u32::from(self.upsample),
            has_temb: u32::from(self.temb.is_some()),
            temb_stride: self.temb.map_or(0, |term| term.stride as u32),
            has_residual: u32::from(self.residual.is_some()),
            output_scale: self.residual.map_or(1.0, |(_, factor)| 1.0 / factor),
            k_total: k as u32,
            m_vec4: self.weights.m_vec4 as u32,
            k_steps: self.weights.k_steps as u32,
            steps_per_split: plan.steps_per_split as u32,
            split_k: plan.split_k as u32,
            m_tiles: self.c_out.div_ceil(tm) as u32,
            n_tiles: n.div_ceil(tn) as u32,
            out_len: out_len as u32,
            input_norm: self.input_norm.map_or(0, |norm| 1 + u32::from(norm.silu)),
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        };
        let optional = |t: Option<TensorId>| t.map_or(Resource::Unused, Resource::Tensor);
        let epilogue = [
            Resource::Weight(self.bias.buffer()),
            self.temb.map_or(Resource::Unused, |term| term.resource()),
            optional(self.residual.map(|(id, _)| id)),
        ];
        // Split K: the partial sums go to a scratch tensor that the reduction reads.
        let gemm_output = match plan.split_k {
            1 => output,
            ways => graph.tensor(ways * out_len, &format!("{name} (split-K partials)"))?,
        };
        let mut resources = vec![
            Resource::Tensor(input),
            optional(second),
            Resource::Weight(&self.weights.buffer),
        ];
        resources.extend(epilogue);
        resources.push(Resource::Tensor(gemm_output));
        resources.push(optional(self.input_norm.map(|norm| norm.coefficients)));
        let workgroups = tiles(plan.tile, self.c_out, n) * plan.split_k;
        let grid = graph.grid_for_workgroups(workgroups);
        graph.dispatch(
            self.weights.operand.spec(plan.tile),
            &params,
            &resources,
            grid,
            Some(MatmulShape::new(self.c_out, n, k)),
        );
        if plan.split_k > 1 {
            let epilogue = [
                Resource::Weight(self.bias.buffer()),
                self.temb.map_or(Resource::Unused, |term| term.resource()),
                optional(self.residual.map(|(id, _)| id)),
            ];
            let mut resources = vec![
                Resource::Tensor(gemm_output),
                Resource::Unused,
                Resource::Unused,
            ];
            resources.extend(epilogue);
            resources.push(Resource::Tensor(output));
            resources.push(Resource::Unused);
            // One invocation per output element, REDUCE_THREADS (= WORKGROUP_SIZE) per group.
            let grid = graph.grid_for(out_len);
            graph.dispatch(&REDUCE, &params, &resources, grid, None);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto() -> Tuning {
        Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu)
    }

    #[test]
    fn the_packed_matrix_is_the_transposed_weight_padded_with_zeros() {
        // c_out 5, k 3: rows of 8 channels, 16 rows.
        let weight: Vec<f32> = (0..15).map(|v| v as f32 + 1.0).collect();
        let (packed, m_vec4, k_steps) = pack(&weight, 5, 3);
        assert_eq!((m_vec4, k_steps, packed.len()), (2, 1, 16 * 8));
        assert_eq!(packed[0..8], [1.0, 4.0, 7.0, 10.0, 13.0, 0.0, 0.0, 0.0]);
        assert_eq!(packed[8..13], [2.0, 5.0, 8.0, 11.0, 14.0]);
        assert!(packed[3 * 8..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn the_shape_rule_takes_large_tiles_for_large_layers_and_splits_small_ones() {
        // ddpm-cifar10-32 at batch 64, 128 -> 128 channels at 32x32: plenty of 64x64 tiles.
        let large = plan(&auto(), [128, 64 * 32 * 32, 72], 8);
        assert_eq!((large.tile, large.split_k), (GemmTile::M64N64, 1));
        // 32 channels: never the 64-row tile.
        let narrow = plan(&auto(), [32, 64 * 32 * 32, 18], 8);
        assert_eq!((narrow.tile, narrow.split_k), (GemmTile::M32N64, 1));
        // Batch 1, 256 channels at 4x4: 8 workgroups of 32x32, K = 2304 = 144 steps: 8 ways.
        let small = plan(&auto(), [256, 16, 144], 8);
        assert_eq!((small.tile, small.split_k), (GemmTile::M32N32, 8));
        assert_eq!(small.steps_per_split, 18);
        // Few K steps: no split shorter than 4 steps.
        let shallow = plan(&auto(), [32, 16, 9], 8);
        assert_eq!(shallow.split_k, 2);
        assert_eq!(plan(&auto(), [4, 16, 2], 8).split_k, 1);
        // Partials that would not fit a binding: fewer ways.
        assert_eq!(plan(&auto(), [256, 16, 144], 3).split_k, 3);
    }

    #[test]
    fn a_forced_split_covers_every_step_with_no_empty_split() {
        for k_steps in 1..40 {
            for ways in 1..10 {
                let tuning = Tuning {
                    conv_tiles: ConvTiles::Fixed {
                        tile: GemmTile::M32N32,
                        split_k: ways,
                    },
                    ..auto()
                };
                let p = plan(&tuning, [64, 64, k_steps], 100);
                assert!(p.split_k <= ways as usize && p.split_k >= 1);
                assert!(p.steps_per_split * p.split_k >= k_steps);
                assert!(
                    p.steps_per_split * (p.split_k - 1) < k_steps,
                    "{p:?} {k_steps}"
                );
            }
        }
    }
}
