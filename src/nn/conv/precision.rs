//! The operand type of the tiled convolution ([`Operand`]): f32, or f16 under
//! [`Precision::Mixed`] (the same shader, shaders/conv2d_tiled.wgsl, compiled with the
//! shaders/conv2d_tiled_f16.wgsl prelude), on the adapter's cooperative matrices where it has
//! them (the conv2d_tiled_coop.wgsl body), its kernels and its packed weights' upload.

use super::tiled::{fma_variants, of_tile, spec, variant};
use crate::error::{Error, Result};
use crate::gpu::{GemmTile, Gpu, KernelSpec, Precision, WorkgroupSize};

/// The shader with f16 operands (`enable f16;`, `alias Operand = f16;`) and the FMA body.
const SOURCE_F16: &str = concat!(
    include_str!("../../../shaders/conv2d_tiled_f16.wgsl"),
    include_str!("../../../shaders/conv2d_tiled.wgsl"),
    include_str!("../../../shaders/conv2d_tiled_fma.wgsl")
);

/// The cooperative-matrix body with 16 x 16 fragments.
const SOURCE_COOP16: &str = concat!(
    include_str!("../../../shaders/conv2d_tiled_coop16.wgsl"),
    include_str!("../../../shaders/conv2d_tiled.wgsl"),
    include_str!("../../../shaders/conv2d_tiled_coop.wgsl")
);

/// The cooperative-matrix body with 8 x 8 fragments.
const SOURCE_COOP8: &str = concat!(
    include_str!("../../../shaders/conv2d_tiled_coop8.wgsl"),
    include_str!("../../../shaders/conv2d_tiled.wgsl"),
    include_str!("../../../shaders/conv2d_tiled_coop.wgsl")
);

static F16: [KernelSpec; 3] = fma_variants(
    SOURCE_F16,
    [
        "conv2d_tiled_f16_64x64",
        "conv2d_tiled_f16_32x64",
        "conv2d_tiled_f16_32x32",
    ],
);

/// The cooperative-matrix variants of every tile from `source`: the tile's sides are set, the
/// workgroup follows from the device's subgroup size.
const fn coop_variants(source: &'static str, names: [&'static str; 3]) -> [KernelSpec; 3] {
    [
        variant(
            source,
            names[0],
            WorkgroupSize::PerSubgroup(&[("TILE_M", 64.0), ("TILE_N", 64.0)]),
        ),
        variant(
            source,
            names[1],
            WorkgroupSize::PerSubgroup(&[("TILE_M", 32.0), ("TILE_N", 64.0)]),
        ),
        variant(
            source,
            names[2],
            WorkgroupSize::PerSubgroup(&[("TILE_M", 32.0), ("TILE_N", 32.0)]),
        ),
    ]
}

static COOP16: [KernelSpec; 3] = coop_variants(
    SOURCE_COOP16,
    [
        "conv2d_tiled_coop16_64x64",
        "conv2d_tiled_coop16_32x64",
        "conv2d_tiled_coop16_32x32",
    ],
);

static COOP8: [KernelSpec; 3] = coop_variants(
    SOURCE_COOP8,
    [
        "conv2d_tiled_coop8_64x64",
        "conv2d_tiled_coop8_32x64",
        "conv2d_tiled_coop8_32x32",
    ],
);

/// The f16-operand kernels (split-K's reduction reads f32 partials: it is shared).
#[cfg(test)]
pub(super) static SPECS: &[&KernelSpec] = &[
    &F16[0], &F16[1], &F16[2], &COOP16[0], &COOP16[1], &COOP16[2], &COOP8[0], &COOP8[1], &COOP8[2],
];

/// The type of the tiled convolution's weights in memory and of its workgroup tiles, and the
/// body that multiplies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operand {
    /// f32 ([`Precision::F32`]).
    F32,
    /// f16 ([`Precision::Mixed`]): half the weight bytes, f32 products and sums.
    F16,
    /// f16 on cooperative matrices of `fragment` x `fragment` ([`Precision::Mixed`] on an
    /// adapter with them): the same weights, f32 accumulation in the matrix units.
    Coop { fragment: u32 },
}

/// The largest finite f16.
const F16_MAX: f32 = 65504.0;

impl Operand {
    /// The operand type of `gpu`'s precision and cooperative matrices.
    pub fn of(gpu: &Gpu) -> Self {
        match (gpu.precision(), gpu.cooperative_matrix()) {
            (Precision::F32, _) => Operand::F32,
            (Precision::Mixed, None) => Operand::F16,
            (Precision::Mixed, Some(config)) => Operand::Coop {
                fragment: config.fragment,
            },
        }
    }

    /// The kernel of `tile` for this operand type.
    pub fn spec(self, tile: GemmTile) -> &'static KernelSpec {
        match self {
            Operand::F32 => spec(tile),
            Operand::F16 => of_tile(&F16, tile),
            Operand::Coop { fragment: 16 } => of_tile(&COOP16, tile),
            Operand::Coop { .. } => of_tile(&COOP8, tile),
        }
    }

    /// A storage buffer holding `values` (the packed weights `name`) as this type; f16 is
    /// rounded to nearest. A value beyond f16's range is an [`Error::InvalidSetting`] naming
    /// the tensor.
    pub fn upload(self, gpu: &Gpu, values: &[f32], name: &str) -> Result<wgpu::Buffer> {
        let bytes: Vec<u8> = match self {
            Operand::F32 => bytemuck::cast_slice(values).to_vec(),
            Operand::F16 | Operand::Coop { .. } => {
                if let Some(v) = values.iter().find(|v| v.abs() > F16_MAX) {
                    return Err(Error::InvalidSetting {
                        setting: "precision",
                        message: format!(
                            "weight `{name}` holds {v}, beyond f16's range (±{F16_MAX}): \
                             use f32 precision"
                        ),
                    });
                }
                let halves: Vec<u16> = values
                    .iter()
                    .map(|&v| half::f16::from_f32(v).to_bits())
                    .collect();
                bytemuck::cast_slice(&halves).to_vec()
            }
        };
        // At least 4 bytes, as for any tensor.
        let size = (bytes.len() as u64).max(4);
        gpu.check_storage_size(name, size)?;
        let buffer = gpu.create_buffer(
            &wgpu::BufferDescriptor {
                label: Some(name),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            },
            &format!("allocating weights `{name}` ({size} bytes)"),
        )?;
        gpu.queue().write_buffer(&buffer, 0, &bytes);
        Ok(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tile_has_a_kernel_of_each_operand_type_with_its_own_name() {
        let operands = [
            Operand::F32,
            Operand::F16,
            Operand::Coop { fragment: 16 },
            Operand::Coop { fragment: 8 },
        ];
        for tile in GemmTile::ALL {
            let specs = operands.map(|operand| operand.spec(tile));
            let names: std::collections::BTreeSet<_> = specs.iter().map(|s| s.name).collect();
            assert_eq!(names.len(), operands.len(), "{names:?}");
            assert_eq!(specs[0].workgroup_size, specs[1].workgroup_size);
            assert!(specs[0].source.contains("\nalias Operand = f32;"));
            for spec in &specs[1..] {
                assert!(spec.source.contains("\nalias Operand = f16;"));
            }
            assert!(specs[2].source.contains("coop_mat16x16<f16, A>"));
            assert!(specs[3].source.contains("coop_mat8x8<f16, A>"));
        }
    }
}
