//! The bundled model: a small DDPM trained on Fashion-MNIST (assets/fashion-mnist, made by
//! tools/train), embedded in the binary so that nothing is read from the source tree at run
//! time.

use std::path::Path;
use std::sync::Arc;

use super::{Unet, UnetConfig};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::Weights;
use crate::schedule::SchedulerConfig;

const CONFIG: &str = include_str!("../../../assets/fashion-mnist/config.json");
const WEIGHTS: &[u8] =
    include_bytes!("../../../assets/fashion-mnist/diffusion_pytorch_model.safetensors");
const SCHEDULER_CONFIG: &str = include_str!("../../../assets/fashion-mnist/scheduler_config.json");

/// Name of the bundled model in errors and messages.
pub const BUNDLED_MODEL: &str = "bundled fashion-mnist model";

impl Unet {
    /// The bundled Fashion-MNIST model (28x28 grayscale, 1.1M parameters).
    pub fn bundled(gpu: Arc<Gpu>) -> Result<Self> {
        let config = UnetConfig::from_json_str(CONFIG, BUNDLED_MODEL)?;
        let mut weights = Weights::from_bytes(WEIGHTS, BUNDLED_MODEL)?;
        let unet = Self::new(gpu, config, &mut weights)?;
        weights.finish()?;
        Ok(unet)
    }
}

/// The scheduler configuration the bundled model was trained with.
pub fn bundled_scheduler_config() -> Result<SchedulerConfig> {
    SchedulerConfig::from_json_str(SCHEDULER_CONFIG, BUNDLED_MODEL)
}

/// Writes the bundled model as a diffusers folder (config.json,
/// diffusion_pytorch_model.safetensors, scheduler_config.json) into `dir`, e.g. for
/// `UNet2DModel.from_pretrained(dir)`.
pub fn write_bundled_model(dir: &Path) -> Result<()> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    for (name, bytes) in [
        ("config.json", CONFIG.as_bytes()),
        ("diffusion_pytorch_model.safetensors", WEIGHTS),
        ("scheduler_config.json", SCHEDULER_CONFIG.as_bytes()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(io_error(&path))?;
    }
    Ok(())
}
