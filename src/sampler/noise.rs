//! The random numbers of a run: drawn on the host from a seeded RNG (the same on every
//! machine), or given explicitly so a run can take diffusers' exact noise tensors.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};

/// Where a run's x_T and per-step noise come from.
#[derive(Debug, Clone, Copy)]
pub enum NoiseSource<'a> {
    /// Standard normal draws from ChaCha8 seeded with this value: x_T first, then one tensor
    /// per step that adds noise, in step order (diffusers' pipeline draw order).
    Seed(u64),
    /// Exact tensors: `initial` is x_T ([B, C, H, W]; the Euler samplers multiply it by
    /// diffusers' `init_noise_sigma`, as its pipelines do with their draw); `per_step` holds one [B, C, H, W] tensor
    /// per step, in order (diffusers' `variance_noise`; steps that add no noise ignore theirs).
    /// `per_step` may be empty when no step adds noise.
    Explicit {
        /// x_T.
        initial: &'a [f32],
        /// `num_steps * B*C*H*W` values.
        per_step: &'a [f32],
    },
    /// x_T given ([B, C, H, W]); the step noise drawn from ChaCha8 seeded with `seed`.
    InitialWithSeed {
        /// x_T.
        initial: &'a [f32],
        /// Seed of the step noise.
        seed: u64,
    },
}

/// Hands out x_T and each step's noise for one run.
pub(crate) struct NoiseStream<'a> {
    len: usize,
    source: StreamSource<'a>,
}

enum StreamSource<'a> {
    Seeded(Box<ChaCha8Rng>),
    Explicit(&'a [f32]),
}

impl<'a> NoiseStream<'a> {
    /// Checks the lengths and returns x_T and the stream of step noise.
    pub fn start(
        source: NoiseSource<'a>,
        len: usize,
        steps: usize,
        any_step_adds_noise: bool,
    ) -> Result<(Vec<f32>, Self)> {
        match source {
            NoiseSource::Seed(seed) => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let initial = draw(&mut rng, len);
                let source = StreamSource::Seeded(Box::new(rng));
                Ok((initial, Self { len, source }))
            }
            NoiseSource::InitialWithSeed { initial, seed } => {
                check_initial(initial, len)?;
                let source = StreamSource::Seeded(Box::new(ChaCha8Rng::seed_from_u64(seed)));
                Ok((initial.to_vec(), Self { len, source }))
            }
            NoiseSource::Explicit { initial, per_step } => {
                check_initial(initial, len)?;
                let needed = steps * len;
                if per_step.len() != needed && (any_step_adds_noise || !per_step.is_empty()) {
                    return Err(Error::Shape {
                        tensor: "per-step noise".into(),
                        expected: format!("{steps} steps x {len} values = {needed} values"),
                        found: format!("{} values", per_step.len()),
                    });
                }
                let source = StreamSource::Explicit(per_step);
                Ok((initial.to_vec(), Self { len, source }))
            }
        }
    }

    /// The noise of step `index` (call only for steps that add noise, in order).
    pub fn step_noise(&mut self, index: usize) -> std::borrow::Cow<'a, [f32]> {
        let len = self.len;
        match &mut self.source {
            StreamSource::Seeded(rng) => draw(rng, len).into(),
            StreamSource::Explicit(per_step) => (&per_step[index * len..(index + 1) * len]).into(),
        }
    }
}

fn check_initial(initial: &[f32], len: usize) -> Result<()> {
    if initial.len() == len {
        Ok(())
    } else {
        Err(Error::Shape {
            tensor: "initial noise (x_T)".into(),
            expected: format!("{len} values"),
            found: format!("{} values", initial.len()),
        })
    }
}

fn draw(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| StandardNormal.sample(rng)).collect()
}
