//! Read-only f32 tables held in an `rgba32float` texture and read with `textureLoad`, four
//! values per texel. Kernels use them for weights: on CPU Vulkan (lavapipe) a texel fetch costs
//! about an eighth of the same four values loaded from a storage buffer, which is loaded lane by
//! lane; on GPUs the texture path is at least as fast.

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Texels per texture row, at most: a power of two, so kernels find texel `i` at
/// `(i & (width - 1), i >> log2(width))`.
const MAX_ROW_TEXELS: u32 = 2048;

/// A table of f32 values, four per texel, row-major in rows of 2^[`TexelTable::row_shift`]
/// texels.
#[derive(Debug)]
pub struct TexelTable {
    view: wgpu::TextureView,
    row_shift: u32,
}

impl TexelTable {
    /// Uploads `values` (padded with zeros to whole texels and rows) for `name`; fails with
    /// [`Error::TooLarge`] past the device's texture height limit.
    pub fn from_values(gpu: &Gpu, values: &[f32], name: &str) -> Result<Self> {
        let max_side = gpu.limits().max_texture_dimension_2d.max(1);
        // The largest power of two that fits both limits.
        let row_texels = 1u32 << MAX_ROW_TEXELS.min(max_side).ilog2();
        let texels = values.len().div_ceil(4).max(1);
        let rows = texels.div_ceil(row_texels as usize);
        if rows > max_side as usize {
            return Err(Error::TooLarge {
                tensor: name.to_string(),
                bytes: (values.len() * 4) as u64,
                limit_name: "max_texture_dimension_2d (squared, 16 bytes per texel)",
                limit: u64::from(max_side) * u64::from(row_texels) * 16,
            });
        }
        let mut padded = values.to_vec();
        padded.resize(rows * row_texels as usize * 4, 0.0);
        let size = wgpu::Extent3d {
            width: row_texels,
            height: rows as u32,
            depth_or_array_layers: 1,
        };
        let texture = gpu.create_texture(
            &wgpu::TextureDescriptor {
                label: Some(name),
                size,
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Float,
                usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            },
            &format!("uploading weights `{name}`"),
        )?;
        gpu.queue().write_texture(
            wgpu::TexelCopyTextureInfo {
                texture: &texture,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            bytemuck::cast_slice(&padded),
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(row_texels * 16),
                rows_per_image: Some(rows as u32),
            },
            size,
        );
        Ok(Self {
            view: texture.create_view(&Default::default()),
            row_shift: row_texels.trailing_zeros(),
        })
    }

    /// log2 of the texels per row: texel `i` is at `(i & (2^shift - 1), i >> shift)`.
    pub fn row_shift(&self) -> u32 {
        self.row_shift
    }

    /// The view kernels bind.
    pub fn view(&self) -> &wgpu::TextureView {
        &self.view
    }
}
