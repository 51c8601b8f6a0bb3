//! `Precision`: the arithmetic the convolutions run in, chosen when the device is opened
//! ([`GpuOptions::precision`](super::GpuOptions::precision)), and the device feature it needs.

use crate::error::{Error, Result};

/// The precision of the convolutions (every `nn.Conv2d`, and the attention projections that
/// run as 1x1 convolutions).
///
/// [`Precision::F32`] is the default and matches diffusers' float32 results (2e-5 relative L2
/// of the U-Net forward). [`Precision::Mixed`] stores the convolution weights as f16 (half the
/// weight bytes) and stages each GEMM tile of weights and gathered activations in workgroup
/// memory as f16, multiplying and accumulating in f32 with an f32 epilogue and f32 output:
/// the activations between layers, group norms, linear layers, attention and the sampler stay
/// f32. It needs [`wgpu::Features::SHADER_F16`] and runs the tiled convolution
/// (shaders/conv2d_tiled.wgsl with its f16 prelude) on both kernel sets, its products on the
/// adapter's cooperative matrices where it has usable ones
/// ([`CooperativeMatrix`](super::CooperativeMatrix)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 everywhere.
    #[default]
    F32,
    /// f16 convolution operands, f32 accumulation and activations.
    Mixed,
}

impl Precision {
    /// The device features this precision needs.
    pub fn required_features(self) -> wgpu::Features {
        match self {
            Precision::F32 => wgpu::Features::empty(),
            Precision::Mixed => wgpu::Features::SHADER_F16,
        }
    }

    /// Fails with [`Error::MissingFeature`] when `features` (an adapter's or a device's) lack
    /// one this precision needs; `adapter` names the adapter in the error.
    pub fn check_features(self, adapter: &str, features: wgpu::Features) -> Result<()> {
        let missing = self.required_features() - features;
        match missing.iter_names().next() {
            None => Ok(()),
            Some((feature, _)) => Err(Error::MissingFeature {
                adapter: adapter.to_string(),
                feature,
                wanted: format!("{self:?} precision"),
            }),
        }
    }

    /// The name `--precision` takes: `f32` or `mixed`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Mixed => "mixed",
        }
    }

    /// How the convolutions run under this precision, for logs.
    pub fn describe(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Mixed => {
                "mixed: tiled convolution with f16 weights and f16 workgroup tiles \
                 (SHADER_F16), f32 accumulation and activations"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_without_shader_f16_names_the_feature_and_the_adapter() {
        let error = Precision::Mixed
            .check_features("llvmpipe", wgpu::Features::TIMESTAMP_QUERY)
            .unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(
                error,
                Error::MissingFeature {
                    feature: "SHADER_F16",
                    ..
                }
            ),
            "{text}"
        );
        assert!(
            text.contains("llvmpipe") && text.contains("Mixed"),
            "{text}"
        );
        assert!(
            Precision::Mixed
                .check_features("x", wgpu::Features::SHADER_F16)
                .is_ok()
        );
        assert!(
            Precision::F32
                .check_features("x", wgpu::Features::empty())
                .is_ok()
        );
    }
}
