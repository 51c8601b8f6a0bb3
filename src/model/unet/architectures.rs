//! Named U-Net architectures (configs only) that `bench` can run with random weights, so
//! the speed of a well-known layout can be measured without its checkpoint.

use super::{Unet, UnetConfig};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::RandomWeights;
use std::sync::Arc;

/// The names [`Unet::architecture`] knows, with their config.json.
const ARCHITECTURES: &[(&str, &str)] = &[(
    "ddpm-cifar10-32",
    include_str!("../../../assets/architectures/ddpm-cifar10-32/config.json"),
)];

/// The names of the built-in architectures.
pub fn architecture_names() -> impl Iterator<Item = &'static str> {
    ARCHITECTURES.iter().map(|(name, _)| *name)
}

/// The config.json of the built-in architecture `name`, if there is one.
pub fn architecture_config(name: &str) -> Option<&'static str> {
    ARCHITECTURES
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, json)| *json)
}

impl Unet {
    /// The built-in architecture `name` (e.g. `ddpm-cifar10-32`, google/ddpm-cifar10-32's
    /// layout, 35.7M parameters) with deterministic random weights drawn from `seed`.
    pub fn architecture(gpu: Arc<Gpu>, name: &str, seed: u64) -> Result<Self> {
        let json = architecture_config(name).ok_or_else(|| Error::InvalidSetting {
            setting: "architecture",
            message: format!(
                "unknown architecture `{name}` (known: {})",
                architecture_names().collect::<Vec<_>>().join(", ")
            ),
        })?;
        let config = UnetConfig::from_json_str(json, name)?;
        Self::new(gpu, config, &mut RandomWeights::new(seed))
    }
}
