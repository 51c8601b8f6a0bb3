//! The operand type of the tiled convolution ([`Operand`]): f32, or f16 under
//! [`Precision::Mixed`] (the same shader, shaders/conv2d_tiled.wgsl, compiled with the
//! shaders/conv2d_tiled_f16.wgsl prelude), its kernels and its packed weights' upload.

use super::tiled::{OVERRIDES_32X32, OVERRIDES_32X64, OVERRIDES_64X64, spec, variant};
use crate::error::{Error, Result};
use crate::gpu::{GemmTile, Gpu, KernelSpec, Precision};

/// The shader with f16 operands (`enable f16;`, `alias Operand = f16;`).
const SOURCE_F16: &str = concat!(
    include_str!("../../../shaders/conv2d_tiled_f16.wgsl"),
    include_str!("../../../shaders/conv2d_tiled.wgsl")
);

static F16_64X64: KernelSpec = variant(SOURCE_F16, "conv2d_tiled_f16_64x64", OVERRIDES_64X64);
static F16_32X64: KernelSpec = variant(SOURCE_F16, "conv2d_tiled_f16_32x64", OVERRIDES_32X64);
static F16_32X32: KernelSpec = variant(SOURCE_F16, "conv2d_tiled_f16_32x32", OVERRIDES_32X32);

/// The f16-operand kernels (split-K's reduction reads f32 partials: it is shared).
#[cfg(test)]
pub(super) static SPECS: &[&KernelSpec] = &[&F16_64X64, &F16_32X64, &F16_32X32];

/// The type of the tiled convolution's weights in memory and of its workgroup tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operand {
    /// f32 ([`Precision::F32`]).
    F32,
    /// f16 ([`Precision::Mixed`]): half the weight bytes, f32 products and sums.
    F16,
}

/// The largest finite f16.
const F16_MAX: f32 = 65504.0;

impl Operand {
    /// The operand type of `precision`.
    pub fn of(precision: Precision) -> Self {
        match precision {
            Precision::F32 => Operand::F32,
            Precision::Mixed => Operand::F16,
        }
    }

    /// The kernel of `tile` for this operand type.
    pub fn spec(self, tile: GemmTile) -> &'static KernelSpec {
        match (self, tile) {
            (Operand::F32, tile) => spec(tile),
            (Operand::F16, GemmTile::M64N64) => &F16_64X64,
            (Operand::F16, GemmTile::M32N64) => &F16_32X64,
            (Operand::F16, GemmTile::M32N32) => &F16_32X32,
        }
    }

    /// A storage buffer holding `values` (the packed weights `name`) as this type; f16 is
    /// rounded to nearest. A value beyond f16's range is an [`Error::InvalidSetting`] naming
    /// the tensor.
    pub fn upload(self, gpu: &Gpu, values: &[f32], name: &str) -> Result<wgpu::Buffer> {
        let bytes: Vec<u8> = match self {
            Operand::F32 => bytemuck::cast_slice(values).to_vec(),
            Operand::F16 => {
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
        for tile in GemmTile::ALL {
            let (f32_spec, f16_spec) = (Operand::F32.spec(tile), Operand::F16.spec(tile));
            assert_ne!(f32_spec.name, f16_spec.name);
            assert_eq!(f32_spec.workgroup_size, f16_spec.workgroup_size);
            assert!(f16_spec.source.contains("\nalias Operand = f16;"));
            assert!(f32_spec.source.contains("\nalias Operand = f32;"));
        }
    }
}
