//! `Tuning`: the kernel shapes for one adapter (workgroup size, block size, convolution tiles,
//! split-K threshold), chosen by adapter type or forced with `DIFFUSION_WGPU_TUNING`.

use crate::error::{Error, Result};

/// Kernel shapes for one adapter, chosen when the device is opened and applied at pipeline
/// creation. Each kernel family (src/nn/) maps them onto its own variants.
///
/// `DIFFUSION_WGPU_TUNING=gpu|cpu`, read once when [`Gpu::new`](super::Gpu::new) opens a device, replaces the
/// adapter's defaults with those of a GPU or a CPU adapter ([`Tuning::from_env`]), so any
/// adapter can run either kernel set (CI runs the GPU kernels on lavapipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Invocations per workgroup of the register-blocked kernels
    /// ([`WorkgroupSize::PerAdapter`](super::WorkgroupSize::PerAdapter)): 16 on CPU adapters (lavapipe runs a workgroup as SIMD-8
    /// batches; the size hardly matters there), 64 on GPUs (whole warps and wavefronts).
    pub block_workgroup_size: u32,
    /// How much output one invocation of a blocked kernel computes; [`BlockSize::Tiled`] runs
    /// the convolutions as tiled implicit GEMMs.
    pub block_size: BlockSize,
    /// Which tile the tiled convolutions use: [`ConvTiles::Auto`] (a rule on the layer's
    /// shape) or one tile and split-K factor for every layer (tests, measurements).
    pub conv_tiles: ConvTiles,
    /// A tiled convolution that would launch fewer workgroups than this is split along K
    /// (see [`ConvTiles::Auto`]). About twice the adapter's compute units (SMs, CUs, Xe
    /// cores), which wgpu does not report: the default, 256, is twice the 128-132 units of
    /// the largest current GPUs (H100: 132 SMs), so smaller GPUs split a little less often
    /// than they could.
    pub split_k_below_workgroups: u32,
    /// A group norm before a tiled convolution writes only each channel's map, which the
    /// convolution applies (with the SiLU) as it gathers its input: the normalised tensor is
    /// never written or read, at the price of the map and SiLU recomputed for every gathered
    /// value. Off by default: on lavapipe's GPU kernel set it made ddpm-cifar10-32 at batch 1
    /// 11% slower; GPUs are still to be measured (`bench --norm-in-conv`, benches/NOTES.md).
    pub norm_in_conv: bool,
}

/// The environment variable that forces a kernel set: `gpu` or `cpu`.
pub const TUNING_ENV: &str = "DIFFUSION_WGPU_TUNING";

impl Tuning {
    /// The defaults for an adapter of `device_type` (a device from the app counts as a GPU).
    pub fn for_device_type(device_type: wgpu::DeviceType) -> Self {
        match device_type {
            wgpu::DeviceType::Cpu => Self {
                block_workgroup_size: 16,
                block_size: BlockSize::Large,
                conv_tiles: ConvTiles::Auto,
                split_k_below_workgroups: 256,
                norm_in_conv: false,
            },
            _ => Self {
                block_workgroup_size: 64,
                block_size: BlockSize::Tiled,
                conv_tiles: ConvTiles::Auto,
                split_k_below_workgroups: 256,
                norm_in_conv: false,
            },
        }
    }

    /// The defaults forced by [`TUNING_ENV`] (`gpu` or `cpu`, any case), `None` when it is
    /// unset or empty; any other value is an [`Error::Environment`] naming the variable.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var(TUNING_ENV) {
            Ok(value) => Self::parse_env(&value),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(value)) => Err(Error::Environment {
                variable: TUNING_ENV,
                value: value.to_string_lossy().into_owned(),
                expected: "`gpu` or `cpu`",
            }),
        }
    }

    fn parse_env(value: &str) -> Result<Option<Self>> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "gpu" => Ok(Some(Self::for_device_type(wgpu::DeviceType::DiscreteGpu))),
            "cpu" => Ok(Some(Self::for_device_type(wgpu::DeviceType::Cpu))),
            _ => Err(Error::Environment {
                variable: TUNING_ENV,
                value: value.to_string(),
                expected: "`gpu` or `cpu`",
            }),
        }
    }
}

/// How much output one invocation of a register-blocked kernel computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockSize {
    /// Many outputs per invocation, each loaded weight reused from registers: best on CPU
    /// adapters, where every storage load is costly and parallelism is a few cores' SIMD lanes
    /// (the convolution's 32 channels x 16 pixels: 1.2x over 16-channel blocks on lavapipe).
    Large,
    /// Few outputs per invocation and many invocations (the convolution's 4 channels x 4
    /// pixels: on an H100, ddpm-cifar10-32's forward took 98 / 131 / 312 ms at batch
    /// 1 / 16 / 64 with them against 489 / 513 / 760 ms with the large blocks).
    Small,
    /// Workgroup tiles of a GEMM staged through workgroup memory (the convolution as an
    /// implicit GEMM, shaders/conv2d_tiled.wgsl): the GPU default.
    Tiled,
}

/// The tile of the tiled convolutions ([`BlockSize::Tiled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvTiles {
    /// Per layer: the largest tile that still launches [`Tuning::split_k_below_workgroups`]
    /// workgroups (64x64 only where C_out > 32); when even 32x32 tiles launch fewer, 32x32
    /// with K split so that the count reaches it (at most 8 ways, 4 K steps each at least).
    Auto,
    /// This tile for every layer, K split `split_k` ways (1: not split; capped at the
    /// layer's K steps).
    Fixed {
        /// The tile.
        tile: GemmTile,
        /// Ways K is split.
        split_k: u32,
    },
}

/// Output tile of one workgroup of a tiled GEMM: channels x pixels, 4 x 4 per invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmTile {
    /// 64 x 64 outputs, 256 invocations.
    M64N64,
    /// 32 x 64 outputs, 128 invocations.
    M32N64,
    /// 32 x 32 outputs, 64 invocations.
    M32N32,
}

impl GemmTile {
    /// Every tile, largest first.
    pub const ALL: [GemmTile; 3] = [GemmTile::M64N64, GemmTile::M32N64, GemmTile::M32N32];

    /// `64x64`, `32x64` or `32x32` (reports, the autotune cache).
    pub fn name(self) -> &'static str {
        match self {
            GemmTile::M64N64 => "64x64",
            GemmTile::M32N64 => "32x64",
            GemmTile::M32N32 => "32x32",
        }
    }

    /// The tile [`GemmTile::name`] names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tile| tile.name() == name)
    }

    /// Invocations of one workgroup (4 x 4 outputs each).
    pub fn invocations(self) -> u32 {
        let (m, n) = self.shape();
        (m * n / 16) as u32
    }

    /// (rows = output channels, columns = output pixels) of the tile.
    pub fn shape(self) -> (usize, usize) {
        match self {
            GemmTile::M64N64 => (64, 64),
            GemmTile::M32N64 => (32, 64),
            GemmTile::M32N32 => (32, 32),
        }
    }
}

/// Whether the tiled convolutions' tile and split-K factor are chosen by measurement on the
/// adapter ([`GpuOptions::autotune`](super::GpuOptions::autotune)): each distinct layer shape,
/// the first time a graph records it, has its candidates timed with timestamp queries and keeps
/// the fastest. Only the GPU kernel set ([`BlockSize::Tiled`] with [`ConvTiles::Auto`]) is
/// tuned; elsewhere it changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Autotune {
    /// The shape rule of [`ConvTiles::Auto`], nothing measured (the library's default).
    #[default]
    Off,
    /// The likely candidates (no split-K where the unsplit tile launches enough workgroups,
    /// splits of at least 4 K steps), 3 timed runs after a warm-up, within a budget of
    /// [`Autotune::QUICK_BUDGET_SECONDS`] per device: layer shapes met once it is spent keep
    /// the rule's plan. The CLI's default.
    Quick,
    /// Every valid tile and split-K factor of every layer shape, 5 timed runs after a
    /// warm-up, however long it takes.
    Full,
}

impl Autotune {
    /// Seconds a device spends measuring in [`Autotune::Quick`].
    pub const QUICK_BUDGET_SECONDS: f64 = 3.0;

    /// `off`, `quick` or `full`.
    pub fn name(self) -> &'static str {
        match self {
            Autotune::Off => "off",
            Autotune::Quick => "quick",
            Autotune::Full => "full",
        }
    }

    /// The time a device may spend measuring, `None` without a limit.
    pub fn budget_seconds(self) -> Option<f64> {
        match self {
            Autotune::Quick => Some(Self::QUICK_BUDGET_SECONDS),
            Autotune::Off | Autotune::Full => None,
        }
    }
}

/// The tile and split-K factor chosen for one layer shape by [`Autotune`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TiledChoice {
    /// The tile.
    pub tile: GemmTile,
    /// Ways K is split.
    pub split_k: u32,
    /// Whether it was measured the fastest (`false`: the shape rule's plan, kept because the
    /// budget was spent before this shape was measured).
    pub measured: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_names_round_trip() {
        for tile in GemmTile::ALL {
            assert_eq!(GemmTile::from_name(tile.name()), Some(tile));
        }
        assert_eq!(GemmTile::from_name("16x16"), None);
        assert_eq!(GemmTile::M64N64.invocations(), 256);
        assert_eq!(GemmTile::M32N32.invocations(), 64);
    }

    #[test]
    fn the_tuning_variable_takes_gpu_or_cpu_and_names_itself_otherwise() {
        let gpu = Tuning::for_device_type(wgpu::DeviceType::DiscreteGpu);
        let cpu = Tuning::for_device_type(wgpu::DeviceType::Cpu);
        assert_eq!(Tuning::parse_env("gpu").unwrap(), Some(gpu));
        assert_eq!(Tuning::parse_env(" CPU ").unwrap(), Some(cpu));
        assert_eq!(Tuning::parse_env("").unwrap(), None);
        assert_eq!(gpu.block_size, BlockSize::Tiled);
        assert_eq!(cpu.block_size, BlockSize::Large);
        let error = Tuning::parse_env("fast").unwrap_err();
        assert!(matches!(
            error,
            Error::Environment {
                variable: TUNING_ENV,
                ..
            }
        ));
        let message = error.to_string();
        assert!(message.contains("DIFFUSION_WGPU_TUNING") && message.contains("fast"));
    }
}
