//! Batches of images as one picture: the grid layout shared by PNG files
//! ([`io::write_png_grid`](crate::io::write_png_grid)) and textures, and [`GridImage`], which
//! draws a GPU tensor into an app's texture with no readback (shaders/image.wgsl).

use std::sync::Arc;

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::{Binding, Gpu, GpuTensor, Kernel, KernelSpec, WorkgroupSize};

/// Pixels between images in a grid, and around it.
pub const GRID_BORDER: usize = 2;

const SOURCE: &str = include_str!("../shaders/image.wgsl");
static GRID_RGBA8UNORM: KernelSpec = KernelSpec {
    name: "image",
    source: SOURCE,
    entry_point: "grid_rgba8unorm",
    bindings: &[
        Binding::Uniform,
        Binding::StorageRead,
        Binding::StorageTextureWrite(wgpu::TextureFormat::Rgba8Unorm),
    ],
    params: Some(&PARAMS_LAYOUT),
    workgroup_size: WorkgroupSize::Fixed,
};
static GRID_RGBA16FLOAT: KernelSpec = KernelSpec {
    name: "image",
    source: SOURCE,
    entry_point: "grid_rgba16float",
    bindings: &[
        Binding::Uniform,
        Binding::StorageRead,
        Binding::StorageTextureWrite(wgpu::TextureFormat::Rgba16Float),
    ],
    params: Some(&PARAMS_LAYOUT),
    workgroup_size: WorkgroupSize::Fixed,
};
/// Workgroup side of the grid kernels (16 x 16 invocations).
const TILE: u32 = 16;

/// Where each image of a batch goes in a grid: as square as possible (`ceil(sqrt(B))`
/// columns), row by row, with [`GRID_BORDER`] black pixels between the images and around them.
///
/// ```
/// use diffusion_wgpu::GridLayout;
///
/// let layout = GridLayout::new(16, 28, 28)?;
/// assert_eq!((layout.columns, layout.rows), (4, 4));
/// assert_eq!((layout.width(), layout.height()), (122, 122));
/// assert_eq!(layout.origin(5), (32, 32));
/// # Ok::<(), diffusion_wgpu::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridLayout {
    /// Number of images.
    pub batch: usize,
    /// Height of one image in pixels.
    pub image_height: usize,
    /// Width of one image in pixels.
    pub image_width: usize,
    /// Images per row.
    pub columns: usize,
    /// Rows of images.
    pub rows: usize,
}

impl GridLayout {
    /// The layout of `batch` images of `image_height` x `image_width` pixels (none of them 0).
    pub fn new(batch: usize, image_height: usize, image_width: usize) -> Result<Self> {
        if batch == 0 || image_height == 0 || image_width == 0 {
            return Err(Error::Shape {
                tensor: "images".into(),
                expected: "at least one image of at least one pixel".into(),
                found: format!("{batch} images of {image_height}x{image_width}"),
            });
        }
        let columns = (batch as f64).sqrt().ceil() as usize;
        Ok(Self {
            batch,
            image_height,
            image_width,
            columns,
            rows: batch.div_ceil(columns),
        })
    }

    /// Width of the whole grid in pixels.
    pub fn width(&self) -> usize {
        self.columns * (self.image_width + GRID_BORDER) + GRID_BORDER
    }

    /// Height of the whole grid in pixels.
    pub fn height(&self) -> usize {
        self.rows * (self.image_height + GRID_BORDER) + GRID_BORDER
    }

    /// The grid's size as a texture extent (one layer).
    pub fn extent(&self) -> wgpu::Extent3d {
        wgpu::Extent3d {
            width: self.width() as u32,
            height: self.height() as u32,
            depth_or_array_layers: 1,
        }
    }

    /// The pixel (x, y) where image `index`'s top-left corner lands.
    pub fn origin(&self, index: usize) -> (usize, usize) {
        (
            GRID_BORDER + (index % self.columns) * (self.image_width + GRID_BORDER),
            GRID_BORDER + (index / self.columns) * (self.image_height + GRID_BORDER),
        )
    }
}

/// Mirrors `GridParams` in shaders/image.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GridParams {
    batch: u32,
    channels: u32,
    height: u32,
    width: u32,
    columns: u32,
    border: u32,
    grid_width: u32,
    grid_height: u32,
}

static PARAMS_LAYOUT: crate::gpu::ParamsLayout = crate::params_layout!(GridParams {
    batch,
    channels,
    height,
    width,
    columns,
    border,
    grid_width,
    grid_height,
});

/// Every kernel of shaders/image.wgsl.
#[cfg(test)]
pub(crate) static SPECS: &[&KernelSpec] = &[&GRID_RGBA8UNORM, &GRID_RGBA16FLOAT];

/// Draws a tensor of images ([B, C, H, W] in [-1, 1], C = 1 or 3) into the top-left corner
/// of an app's texture as a [`GridLayout`] grid, on the GPU: each value becomes
/// `clamp(x / 2 + 0.5, 0, 1)`, grayscale is replicated to RGB, alpha is 1. In an
/// `Rgba8Unorm` texture the bytes are exactly those of
/// [`io::write_png_grid`](crate::io::write_png_grid).
///
/// Built once for a (tensor, texture) pair; [`record`](Self::record) then costs one dispatch
/// and uploads nothing, so it can run every frame. The texture needs
/// `TextureUsages::STORAGE_BINDING`, one of [`GridImage::FORMATS`] and at least the grid's size.
///
/// ```no_run
/// use std::sync::Arc;
/// use diffusion_wgpu::{Gpu, GpuOptions, GpuTensor, GridImage, GridLayout};
///
/// let gpu = Arc::new(Gpu::new(&GpuOptions::default())?);
/// let images = GpuTensor::zeros(&gpu, &[16, 1, 28, 28], "images")?;
/// let layout = GridLayout::new(16, 28, 28)?;
/// let texture = gpu.device().create_texture(&wgpu::TextureDescriptor {
///     label: Some("grid"),
///     size: layout.extent(),
///     mip_level_count: 1,
///     sample_count: 1,
///     dimension: wgpu::TextureDimension::D2,
///     format: wgpu::TextureFormat::Rgba8Unorm,
///     usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::TEXTURE_BINDING,
///     view_formats: &[],
/// });
/// let grid = GridImage::new(&gpu, &images, &texture)?;
/// let mut encoder = gpu.device().create_command_encoder(&Default::default());
/// grid.record(&mut encoder);
/// gpu.queue().submit([encoder.finish()]);
/// # Ok::<(), diffusion_wgpu::Error>(())
/// ```
#[derive(Debug)]
pub struct GridImage {
    kernel: Arc<Kernel>,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
    layout: GridLayout,
}

impl GridImage {
    /// The texture formats it can write (storage formats every WebGPU device supports).
    pub const FORMATS: [wgpu::TextureFormat; 2] = [
        wgpu::TextureFormat::Rgba8Unorm,
        wgpu::TextureFormat::Rgba16Float,
    ];

    /// Checks `images` and `texture` and binds them. Fails with [`Error::Shape`] for a tensor
    /// that is not [B, 1 or 3, H, W], and [`Error::Texture`] for a texture of another format,
    /// without `STORAGE_BINDING`, not 2D, or smaller than the grid.
    pub fn new(gpu: &Gpu, images: &GpuTensor, texture: &wgpu::Texture) -> Result<Self> {
        let &[batch, channels, height, width] = images.shape() else {
            return Err(Error::Shape {
                tensor: images.name().to_string(),
                expected: "4 dimensions [B, C, H, W]".into(),
                found: format!("{:?}", images.shape()),
            });
        };
        if channels != 1 && channels != 3 {
            return Err(Error::Shape {
                tensor: images.name().to_string(),
                expected: "1 (grayscale) or 3 (RGB) channels for an image".into(),
                found: format!("{channels} channels"),
            });
        }
        let layout = GridLayout::new(batch, height, width)?;
        let spec = match texture.format() {
            wgpu::TextureFormat::Rgba8Unorm => &GRID_RGBA8UNORM,
            wgpu::TextureFormat::Rgba16Float => &GRID_RGBA16FLOAT,
            other => {
                return Err(Error::Texture {
                    expected: format!("one of the formats {:?}", Self::FORMATS),
                    found: format!("{other:?}"),
                });
            }
        };
        check_texture(gpu, texture, &layout)?;
        let params = GridParams {
            batch: batch as u32,
            channels: channels as u32,
            height: height as u32,
            width: width as u32,
            columns: layout.columns as u32,
            border: GRID_BORDER as u32,
            grid_width: layout.width() as u32,
            grid_height: layout.height() as u32,
        };
        let device = gpu.device();
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("grid image params"),
            contents: bytemuck::bytes_of(&params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let view = texture.create_view(&wgpu::TextureViewDescriptor {
            label: Some("grid image"),
            dimension: Some(wgpu::TextureViewDimension::D2),
            mip_level_count: Some(1),
            array_layer_count: Some(1),
            ..Default::default()
        });
        let kernel = gpu.kernel(spec);
        let bind_group = kernel.bind_group(
            device,
            &[
                params.as_entire_binding(),
                images.buffer().as_entire_binding(),
                wgpu::BindingResource::TextureView(&view),
            ],
        );
        Ok(Self {
            kernel,
            bind_group,
            workgroups: [
                (layout.width() as u32).div_ceil(TILE),
                (layout.height() as u32).div_ceil(TILE),
                1,
            ],
            layout,
        })
    }

    /// Records the drawing of the tensor's current values into `encoder`.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("grid image"),
            timestamp_writes: None,
        });
        self.kernel
            .dispatch(&mut pass, &self.bind_group, &[], self.workgroups);
    }

    /// The grid it draws.
    pub fn layout(&self) -> GridLayout {
        self.layout
    }
}

/// Checks that `texture` can be bound as a 2D storage texture holding the grid.
fn check_texture(gpu: &Gpu, texture: &wgpu::Texture, layout: &GridLayout) -> Result<()> {
    if gpu.limits().max_storage_textures_per_shader_stage == 0 {
        return Err(Error::Texture {
            expected: "a device that supports storage textures".into(),
            found: "a device whose max_storage_textures_per_shader_stage is 0".into(),
        });
    }
    if !texture
        .usage()
        .contains(wgpu::TextureUsages::STORAGE_BINDING)
    {
        return Err(Error::Texture {
            expected: "usage STORAGE_BINDING".into(),
            found: format!("{:?}", texture.usage()),
        });
    }
    if texture.dimension() != wgpu::TextureDimension::D2 || texture.sample_count() != 1 {
        return Err(Error::Texture {
            expected: "a 2D texture with one sample per pixel".into(),
            found: format!(
                "a {:?} texture with {} samples",
                texture.dimension(),
                texture.sample_count()
            ),
        });
    }
    let (width, height) = (layout.width(), layout.height());
    if (texture.width() as usize) < width || (texture.height() as usize) < height {
        return Err(Error::Texture {
            expected: format!("at least {width}x{height} pixels for a grid of {layout:?}"),
            found: format!("{}x{}", texture.width(), texture.height()),
        });
    }
    Ok(())
}
