//! Files in and out: named f32 tensors in safetensors files (what diffusers users write with
//! `safetensors.torch.save_file`), and PNG grids of generated images.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
#[cfg(feature = "png")]
use crate::image::GridLayout;
use crate::nn::weights::{DATA_DTYPES, to_f32};

/// A tensor read from a file, converted to f32 (integers too, for timesteps and labels).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub data: Vec<f32>,
}

/// Reads every tensor of a safetensors file (F32, F16, BF16, F64, I64, I32 are converted to
/// f32). Errors name the file and the tensor; NaN and infinite values are refused.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, HostTensor>> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| Error::Checkpoint {
        file: file.clone(),
        tensor: "(header)".into(),
        message: e.to_string(),
    })?;
    tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = to_f32(view.dtype(), view.data(), DATA_DTYPES).ok_or_else(|| {
                Error::Checkpoint {
                    file: file.clone(),
                    tensor: name.clone(),
                    message: format!("dtype {:?} is not supported (use F32 or I64)", view.dtype()),
                }
            })?;
            // Also catches F64 values beyond f32's range, which became infinite above.
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return Err(Error::Checkpoint {
                    file: file.clone(),
                    tensor: name,
                    message: format!(
                        "value {i} (of {}) is {} as f32; expected finite values",
                        data.len(),
                        data[i]
                    ),
                });
            }
            let tensor = HostTensor {
                shape: view.shape().to_vec(),
                data,
            };
            Ok((name, tensor))
        })
        .collect()
}

/// Takes tensor `name` out of `tensors`, checking its rank (`dims` dimensions) and, where
/// `expected` has `Some`, each dimension.
pub fn take_tensor(
    tensors: &mut HashMap<String, HostTensor>,
    file: &Path,
    name: &str,
    expected: &[Option<usize>],
) -> Result<HostTensor> {
    let error = |message: String| Error::Checkpoint {
        file: file.display().to_string(),
        tensor: name.to_string(),
        message,
    };
    let tensor = tensors.remove(name).ok_or_else(|| {
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        error(format!("missing (the file holds {names:?})"))
    })?;
    let matches = tensor.shape.len() == expected.len()
        && tensor
            .shape
            .iter()
            .zip(expected)
            .all(|(&d, e)| e.is_none_or(|e| e == d));
    if !matches {
        let expected: Vec<String> = expected
            .iter()
            .map(|e| e.map_or("_".to_string(), |d| d.to_string()))
            .collect();
        return Err(error(format!(
            "expected shape [{}], got {:?}",
            expected.join(", "),
            tensor.shape
        )));
    }
    Ok(tensor)
}

/// Writes f32 tensors `(name, shape, data)` to a safetensors file.
pub fn write_tensors(path: &Path, tensors: &[(&str, &[usize], &[f32])]) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|&(name, shape, data)| {
            safetensors::tensor::TensorView::new(
                Dtype::F32,
                shape.to_vec(),
                bytemuck::cast_slice(data),
            )
            .map(|view| (name.to_string(), view))
            .map_err(|e| Error::Shape {
                tensor: name.to_string(),
                expected: format!(
                    "{} values for shape {shape:?}",
                    shape.iter().product::<usize>()
                ),
                found: format!("{} values ({e})", data.len()),
            })
        })
        .collect::<Result<_>>()?;
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    // Serialised in memory and written with `fs::write`, so the file gets the ordinary
    // permissions of a new file (the umask's), not the 0600 of a temporary file.
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| io_error(std::io::Error::other(e.to_string())))?;
    std::fs::write(path, bytes).map_err(io_error)
}

/// Reads an 8-bit grayscale or RGB PNG as one image [1, C, H, W] in [-1, 1] (diffusers'
/// image processor: `2 * pixel / 255 - 1`); C is 1 or 3. Other formats are errors naming the
/// file.
#[cfg(feature = "png")]
pub fn read_png(path: &Path) -> Result<HostTensor> {
    let error = |message: String| Error::Checkpoint {
        file: path.display().to_string(),
        tensor: "(image)".into(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .map_err(|e| error(format!("not a readable PNG: {e}")))?;
    let info = reader.info();
    let (width, height) = (info.width as usize, info.height as usize);
    let channels = match (info.color_type, info.bit_depth) {
        (png::ColorType::Grayscale, png::BitDepth::Eight) => 1,
        (png::ColorType::Rgb, png::BitDepth::Eight) => 3,
        (color, depth) => {
            return Err(error(format!(
                "{color:?} at {depth:?} bits; expected 8-bit grayscale or RGB"
            )));
        }
    };
    let mut pixels = vec![0u8; reader.output_buffer_size().unwrap_or(0)];
    reader
        .next_frame(&mut pixels)
        .map_err(|e| error(format!("not a readable PNG: {e}")))?;
    let mut data = vec![0f32; channels * height * width];
    for (i, &p) in pixels.iter().take(data.len()).enumerate() {
        let (c, pixel) = (i % channels, i / channels);
        data[c * height * width + pixel] = 2.0 * (f32::from(p) / 255.0) - 1.0;
    }
    Ok(HostTensor {
        shape: vec![1, channels, height, width],
        data,
    })
}

/// Writes a batch of images [B, C, H, W] in [-1, 1] as one PNG grid (as square as possible,
/// 2-pixel black borders: [`GridLayout`]), mapping each value as diffusers' pipelines do:
/// `round(255 * clamp(x / 2 + 0.5, 0, 1))`. C = 1 gives grayscale, C = 3 RGB.
#[cfg(feature = "png")]
pub fn write_png_grid(path: &Path, images: &[f32], shape: [usize; 4]) -> Result<()> {
    let [batch, channels, height, width] = shape;
    let color = match channels {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        _ => {
            return Err(Error::Shape {
                tensor: "images".into(),
                expected: "1 (grayscale) or 3 (RGB) channels for a PNG".into(),
                found: format!("{channels} channels"),
            });
        }
    };
    if images.len() != shape.iter().product::<usize>() || batch == 0 {
        return Err(Error::Shape {
            tensor: "images".into(),
            expected: format!(
                "{} values for shape {shape:?}",
                shape.iter().product::<usize>()
            ),
            found: format!("{} values", images.len()),
        });
    }
    let layout = GridLayout::new(batch, height, width)?;
    let (grid_width, grid_height) = (layout.width(), layout.height());
    let mut pixels = vec![0u8; grid_width * grid_height * channels];
    for (n, image) in images.chunks_exact(channels * height * width).enumerate() {
        let (left, top) = layout.origin(n);
        for c in 0..channels {
            for y in 0..height {
                for x in 0..width {
                    let value = image[(c * height + y) * width + x];
                    let pixel = ((value / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8;
                    pixels[((top + y) * grid_width + left + x) * channels + c] = pixel;
                }
            }
        }
    }
    let io_error = |source: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(path).map_err(io_error)?;
    let mut encoder = png::Encoder::new(
        std::io::BufWriter::new(file),
        grid_width as u32,
        grid_height as u32,
    );
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| io_error(std::io::Error::other(e.to_string())))?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| io_error(std::io::Error::other(e.to_string())))?;
    writer
        .finish()
        .map_err(|e| io_error(std::io::Error::other(e.to_string())))
}
