//! Checks that a [`UnetConfig`] describes a network this crate can build.

use super::super::blocks::UnetLayout;
use super::{MAX_BLOCKS, MAX_CHANNELS, MAX_CLASSES, MAX_LAYERS_PER_BLOCK, UnetConfig};
use crate::error::{Error, Result};

impl UnetConfig {
    /// Checks that the configuration describes a network this crate can build: block lists of
    /// equal non-zero length, positive channel counts, every GroupNorm's channels divisible by
    /// its groups and every attention's channels by `attention_head_dim`. `source_name` names
    /// the config in errors.
    pub fn validate(&self, source_name: &str) -> Result<()> {
        let error = |key: &str, message: String| Error::Config {
            source_name: source_name.to_string(),
            key: key.to_string(),
            message,
        };
        let positive = |key: &str, value: usize| {
            if value == 0 {
                Err(error(key, "expected a value > 0, got 0".into()))
            } else {
                Ok(())
            }
        };
        positive("in_channels", self.in_channels)?;
        positive("out_channels", self.out_channels)?;
        positive("layers_per_block", self.layers_per_block)?;
        positive("norm_num_groups", self.norm_num_groups)?;
        for (key, value) in [
            ("sample_size", self.sample_size),
            ("attention_head_dim", self.attention_head_dim),
            ("attn_norm_num_groups", self.attn_norm_num_groups),
            ("num_class_embeds", self.num_class_embeds),
            ("time_embedding_dim", self.time_embedding_dim),
        ] {
            if let Some(value) = value {
                positive(key, value)?;
            }
        }

        // Bounds far above any released model, so a corrupt value is refused here instead of
        // overflowing a size computation or allocating per-layer tables without end.
        let at_most = |key: &str, value: usize, max: usize| {
            if value > max {
                Err(error(
                    key,
                    format!("{value} is over the limit of {max}; expected a real model's value"),
                ))
            } else {
                Ok(())
            }
        };
        for (key, value) in [
            ("in_channels", Some(self.in_channels)),
            ("out_channels", Some(self.out_channels)),
            ("norm_num_groups", Some(self.norm_num_groups)),
            ("sample_size", self.sample_size),
            ("attention_head_dim", self.attention_head_dim),
            ("attn_norm_num_groups", self.attn_norm_num_groups),
            ("time_embedding_dim", self.time_embedding_dim),
        ] {
            if let Some(value) = value {
                at_most(key, value, MAX_CHANNELS)?;
            }
        }
        at_most(
            "layers_per_block",
            self.layers_per_block,
            MAX_LAYERS_PER_BLOCK,
        )?;
        if let Some(classes) = self.num_class_embeds {
            at_most("num_class_embeds", classes, MAX_CLASSES)?;
        }
        if self.block_out_channels.len() > MAX_BLOCKS {
            return Err(error(
                "block_out_channels",
                format!(
                    "has {} blocks, over the limit of {MAX_BLOCKS}",
                    self.block_out_channels.len()
                ),
            ));
        }
        if let Some(i) = self
            .block_out_channels
            .iter()
            .position(|&c| c > MAX_CHANNELS)
        {
            return Err(error(
                "block_out_channels",
                format!(
                    "entry {i} is {}, over the limit of {MAX_CHANNELS}",
                    self.block_out_channels[i]
                ),
            ));
        }

        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(error(
                "block_out_channels",
                "expected at least one block".into(),
            ));
        }
        if let Some(i) = self.block_out_channels.iter().position(|&c| c == 0) {
            return Err(error(
                "block_out_channels",
                format!("entry {i} is 0; expected channel counts > 0"),
            ));
        }
        for (key, len) in [
            ("down_block_types", self.down_block_types.len()),
            ("up_block_types", self.up_block_types.len()),
        ] {
            if len != n {
                return Err(error(
                    key,
                    format!(
                        "has {len} entries but block_out_channels has {n}; expected one block \
                         per entry of block_out_channels"
                    ),
                ));
            }
        }

        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(error(
                "norm_eps",
                format!("expected a finite value > 0, got {}", self.norm_eps),
            ));
        }
        if !self.mid_block_scale_factor.is_finite() || self.mid_block_scale_factor == 0.0 {
            return Err(error(
                "mid_block_scale_factor",
                format!(
                    "expected a finite non-zero value, got {}",
                    self.mid_block_scale_factor
                ),
            ));
        }
        if self.downsample_padding > 1 {
            return Err(error(
                "downsample_padding",
                format!(
                    "unsupported value {} (supported: 0, 1)",
                    self.downsample_padding
                ),
            ));
        }
        // The sinusoidal embedding divides by (half - freq_shift), half = block_out_channels[0] / 2.
        let half = (self.block_out_channels[0] / 2) as f64;
        if !self.freq_shift.is_finite() || half - self.freq_shift == 0.0 {
            return Err(error(
                "freq_shift",
                format!(
                    "{} makes the timestep embedding divide by zero (half of \
                     block_out_channels[0] is {half}); expected a finite value other than {half}",
                    self.freq_shift
                ),
            ));
        }

        UnetLayout::new(self)
            .check(self)
            .map_err(|(key, message)| error(key, message))
    }
}
