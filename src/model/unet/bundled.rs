//! The bundled model: a small DDPM trained on Fashion-MNIST (assets/fashion-mnist, made by
//! tools/train), embedded in the binary so that nothing is read from the source tree at run
//! time.

use std::sync::Arc;

use super::{Unet, UnetConfig, Weights};
use crate::error::Result;
use crate::gpu::Gpu;
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
