// Activation functions shared by the kernels that fuse them (prepended to linear.wgsl and
// elementwise.wgsl by their KernelSpecs). Codes, as crate::nn::Activation: 0 none, 1 SiLU,
// 2 quick_gelu (x * sigmoid(1.702 x)), 3 gelu (exact, with erf).

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

// erf(x) to within 1.5e-7 (Abramowitz and Stegun 7.1.26); WGSL has no erf.
fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.3275911 * abs(x));
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
        + t * (-1.453152027 + t * 1.061405429))));
    return sign(x) * (1.0 - poly * exp(-x * x));
}

fn gelu(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf(x * 0.70710678118654752));
}

fn activate(x: f32, code: u32) -> f32 {
    switch code {
        case 1u: {
            return silu(x);
        }
        case 2u: {
            return x / (1.0 + exp(-1.702 * x));
        }
        case 3u: {
            return gelu(x);
        }
        default: {
            return x;
        }
    }
}
