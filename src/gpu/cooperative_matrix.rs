//! Cooperative matrices (tensor cores) for [`Precision::Mixed`](super::Precision::Mixed): whether
//! the user allows them ([`CooperativeMatrix`]), and the configuration the tiled convolution's
//! cooperative-matrix body (shaders/conv2d_tiled_coop.wgsl) runs with on an adapter
//! ([`CoopMatrixConfig`]), chosen from what the adapter reports.

use wgpu::{CooperativeMatrixProperties, CooperativeScalarType};

use super::GemmTile;

/// The environment variable that makes the tests of the cooperative-matrix body fail, instead
/// of reporting that they have nothing to check, on an adapter without usable cooperative
/// matrices (.ci/run sets it on the lavapipe of tools/lavapipe-coop/).
pub const REQUIRE_COOPERATIVE_MATRIX_ENV: &str = "DIFFUSION_WGPU_REQUIRE_COOPERATIVE_MATRIX";

/// Whether [`Precision::Mixed`](super::Precision::Mixed) may run its convolutions on the
/// adapter's cooperative matrices (`wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX`: Vulkan's
/// VK_KHR_cooperative_matrix, Metal's simdgroup matrices). Without them, or with
/// [`CooperativeMatrix::Off`], mixed precision runs the FMA body with f16 operands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CooperativeMatrix {
    /// Used under mixed precision where the adapter has a usable configuration.
    #[default]
    Auto,
    /// Never used.
    Off,
}

/// The cooperative-matrix configuration of a device: square f16 x f16 -> f32 fragments of
/// `fragment` x `fragment`, on subgroups of `subgroup_size` invocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoopMatrixConfig {
    /// The fragments' side: 8 or 16.
    pub fragment: u32,
    /// The adapter's subgroup size (fixed: its minimum and maximum agree).
    pub subgroup_size: u32,
}

impl CoopMatrixConfig {
    /// The device features the cooperative-matrix body needs: the matrices themselves, the
    /// subgroup builtins (each subgroup finds its block of fragments by its id) and f16.
    pub const FEATURES: wgpu::Features = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
        .union(wgpu::Features::SUBGROUP)
        .union(wgpu::Features::SHADER_F16);

    /// The configuration to use on an adapter that reports `properties`, subgroups of
    /// `subgroup_sizes` (min, max) and at most `max_invocations` per workgroup: the largest
    /// square f16 -> f32 fragment (16, else 8) with which every tile's workgroup fits. `Err`
    /// says why none is usable.
    pub fn choose(
        properties: &[CooperativeMatrixProperties],
        (subgroup_min, subgroup_max): (u32, u32),
        max_invocations: u32,
    ) -> Result<Self, String> {
        if subgroup_min != subgroup_max {
            return Err(format!(
                "the subgroup size varies ({subgroup_min}..{subgroup_max}): the kernel needs \
                 it fixed"
            ));
        }
        let mut fragments: Vec<u32> = properties
            .iter()
            .filter(|p| {
                p.ab_type == CooperativeScalarType::F16
                    && p.cr_type == CooperativeScalarType::F32
                    && p.m_size == p.n_size
                    && p.n_size == p.k_size
                    && matches!(p.m_size, 8 | 16)
            })
            .map(|p| p.m_size)
            .collect();
        fragments.sort_unstable_by(|a, b| b.cmp(a));
        if fragments.is_empty() {
            return Err(format!(
                "no square 8 or 16 f16 x f16 -> f32 configuration among {properties:?}"
            ));
        }
        let mut why = Vec::new();
        for fragment in fragments {
            let config = Self {
                fragment,
                subgroup_size: subgroup_min,
            };
            match GemmTile::ALL
                .into_iter()
                .map(|tile| (tile, config.threads(tile)))
                .find(|&(tile, threads)| {
                    threads > max_invocations || threads % tile.shape().1 as u32 != 0
                }) {
                None => return Ok(config),
                Some((tile, threads)) => why.push(format!(
                    "{fragment}x{fragment} fragments: {tile:?} would take {threads} invocations \
                     (at most {max_invocations}, a multiple of the tile's columns)"
                )),
            }
        }
        Err(why.join("; "))
    }

    /// The configuration to use on `adapter` under `limits`, or `None` (logged, with the
    /// reason, when the adapter has cooperative matrices that cannot be used).
    pub(super) fn for_adapter(adapter: &wgpu::Adapter, limits: &wgpu::Limits) -> Option<Self> {
        if !adapter.features().contains(Self::FEATURES) {
            return None;
        }
        let info = adapter.get_info();
        let sizes = (info.subgroup_min_size, info.subgroup_max_size);
        let properties = adapter.cooperative_matrix_properties();
        match Self::choose(
            &properties,
            sizes,
            limits.max_compute_invocations_per_workgroup,
        ) {
            Ok(config) => Some(config),
            Err(why) => {
                log::info!("no usable cooperative matrices: {why}");
                None
            }
        }
    }

    /// Invocations per workgroup of `tile`: one subgroup per block of 2 x 2 fragments
    /// (shaders/conv2d_tiled_coop.wgsl's THREADS).
    pub fn threads(&self, tile: GemmTile) -> u32 {
        let (m, n) = tile.shape();
        let block = 2 * self.fragment as usize;
        (m.div_ceil(block) * n.div_ceil(block)) as u32 * self.subgroup_size
    }

    /// For logs and the autotune cache's key: "16x16 fragments, subgroups of 32".
    pub fn describe(&self) -> String {
        format!(
            "{0}x{0} fragments, subgroups of {1}",
            self.fragment, self.subgroup_size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        size: u32,
        ab: CooperativeScalarType,
        cr: CooperativeScalarType,
    ) -> CooperativeMatrixProperties {
        CooperativeMatrixProperties {
            m_size: size,
            n_size: size,
            k_size: size,
            ab_type: ab,
            cr_type: cr,
            saturating_accumulation: false,
        }
    }

    #[test]
    fn the_largest_usable_f16_to_f32_fragment_is_chosen() {
        use CooperativeScalarType::{F16, F32};
        // lavapipe (Mesa 26): 8x8x8, f16 -> f16 and f16 -> f32, subgroups of 8.
        let lavapipe = [config(8, F16, F16), config(8, F16, F32)];
        let chosen = CoopMatrixConfig::choose(&lavapipe, (8, 8), 1024).unwrap();
        assert_eq!((chosen.fragment, chosen.subgroup_size), (8, 8));
        assert_eq!(chosen.threads(GemmTile::M64N64), 128);
        assert_eq!(chosen.threads(GemmTile::M32N32), 32);
        // NVIDIA: 16x16x16 among others, subgroups of 32.
        let nvidia = [
            config(16, F16, F16),
            config(16, F16, F32),
            config(8, F16, F32),
        ];
        let chosen = CoopMatrixConfig::choose(&nvidia, (32, 32), 1024).unwrap();
        assert_eq!((chosen.fragment, chosen.subgroup_size), (16, 32));
        assert_eq!(chosen.threads(GemmTile::M64N64), 128);
        assert_eq!(chosen.threads(GemmTile::M32N64), 64);
        // 16x16 on subgroups of 16: the 32x64 tile would take 32 invocations for 64
        // columns, so 8x8 is taken.
        let chosen = CoopMatrixConfig::choose(&nvidia, (16, 16), 1024).unwrap();
        assert_eq!(chosen.fragment, 8);
    }

    #[test]
    fn unusable_adapters_say_why() {
        use CooperativeScalarType::{F16, F32};
        let only_f16 = [config(16, F16, F16)];
        let why = CoopMatrixConfig::choose(&only_f16, (32, 32), 1024).unwrap_err();
        assert!(why.contains("f32"), "{why}");
        let varying = CoopMatrixConfig::choose(&[config(16, F16, F32)], (32, 64), 1024);
        assert!(varying.unwrap_err().contains("varies"));
        let small = CoopMatrixConfig::choose(&[config(8, F16, F32)], (32, 32), 256);
        assert!(small.unwrap_err().contains("512 invocations"));
    }
}
