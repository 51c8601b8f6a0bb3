// Denoising step kernels (DDPM, DDIM and the multistep solvers): one fused elementwise dispatch per denoising step (`step`), and
// for dynamic thresholding a per-sample quantile of |x0| computed on the GPU (`threshold`),
// dispatched just before it in the same pass.
//
// Bindings (group 0):
//   0 params      uniform, dynamic offset: this step's StepParams, one entry of a per-run table
//   1 sample      storage read_write f32 [B, C, H, W] row-major: x_t in, x_{t-1} out, in place
//   2 model_out   storage read f32 [B, Cm, H, W]: the model's prediction; Cm = C, or 2C when the
//                 second half is a learned variance (channel c's variance is at channel C + c).
//                 With classifier-free guidance (guidance_offset > 0) [2B, Cm, H, W]: the
//                 unconditional predictions, then the conditional ones guidance_offset elements
//                 later, read through model_output(), which combines them.
//   3 noise       storage read f32 [B, C, H, W]: this step's noise (read only when it adds noise)
//   4 thresholds  storage read_write f32 [B]: the dynamic threshold s of each sample
//   5 x0_out      storage read_write f32 [B, C, H, W]: the clipped x0 prediction (when write_x0 = 1)
//   6 history     storage read_write f32 [S, B, C, H, W]: a multistep solver's ring of stored
//                 outputs (x0 or eps of earlier steps), and for UniPC one slot holding the
//                 previous step's corrected sample; one element when unused
// RePaint (inpaint = 1) keeps the known region: with image = history[0], mask = history[1]
// (1 keeps the image), prev = mask * (known_image * image + known_noise * noise)
// + (1 - mask) * prev.
//   7 model_in    storage read_write f32 [B, C, H, W]: a sigma-space solver's model input for
//                 the next step, prev * input_scale (when write_input = 1); one element when unused
//
// Per element, with x = sample, m = model output (u + guidance_scale * (c - u) when guided):
//   x0   = x0_from_sample * x + x0_from_model * m, then clamped (clip_mode 1) or thresholded (2)
//   eps  = eps_from_sample * x + eps_from_model * m + eps_from_x0 * x0
//   prev = prev_from_x0 * x0 + prev_from_eps * eps + prev_from_sample * xs + std * noise
//          + sum_k history_coef<k> * h_k
// with xs = x, except for a multistep step (history_mode 1 stores x0, 2 stores eps: q) with
// h_k = history[history_read<k>] (earlier outputs) and, for UniPC (last_mode 2), its corrector
//   xs = corr_from_last * history[last_slot] + corr_from_stored * q + sum_k corr_coef<k> * h_k
// (last_mode 1 and 2 keep xs in last_slot for the next step). q is stored in slot
// history_write for the steps after it (read before written: slots with a nonzero
// coefficient differ from it).
// where std is noise_std (variance_mode 1), sqrt(v) (2: learned) or
// exp(0.5 * mix(min_log, max_log, (v + 1) / 2)) (3: learned_range), v the model's variance
// channel, and there is no noise term for variance_mode 0. The host derives every coefficient
// (src/sampler/plan.rs).

struct StepParams {
    x0_from_sample: f32,
    x0_from_model: f32,
    eps_from_sample: f32,
    eps_from_model: f32,
    eps_from_x0: f32,
    prev_from_x0: f32,
    prev_from_eps: f32,
    prev_from_sample: f32,
    noise_std: f32,
    variance_mode: u32,
    min_log: f32,
    max_log: f32,
    clip_mode: u32,
    clip_range: f32,
    quantile_low: u32,
    quantile_high: u32,
    quantile_weight: f32,
    threshold_max: f32,
    sample_stride: u32,
    model_stride: u32,
    total: u32,
    write_x0: u32,
    history_mode: u32,
    history_write: u32,
    // Uniform arrays need a 16-byte stride: three scalars each instead.
    history_read0: u32,
    history_read1: u32,
    history_read2: u32,
    history_coef0: f32,
    history_coef1: f32,
    history_coef2: f32,
    last_mode: u32,
    last_slot: u32,
    corr_from_last: f32,
    corr_from_stored: f32,
    corr_coef0: f32,
    corr_coef1: f32,
    corr_coef2: f32,
    input_scale: f32,
    write_input: u32,
    inpaint: u32,
    known_image: f32,
    known_noise: f32,
    guidance_scale: f32,
    guidance_offset: u32,
}

@group(0) @binding(0) var<uniform> p: StepParams;
@group(0) @binding(1) var<storage, read_write> sample: array<f32>;
@group(0) @binding(2) var<storage, read> model_out: array<f32>;
@group(0) @binding(3) var<storage, read> noise: array<f32>;
@group(0) @binding(4) var<storage, read_write> thresholds: array<f32>;
@group(0) @binding(5) var<storage, read_write> x0_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> history: array<f32>;
@group(0) @binding(7) var<storage, read_write> model_in: array<f32>;

const WORKGROUP_SIZE: u32 = 256u;

// The model's prediction at index `mi` of [B, Cm, H, W]: the model output itself, or with
// classifier-free guidance its unconditional (mi) and conditional (mi + guidance_offset)
// predictions combined as diffusers' pipelines do, u + scale * (c - u) in f32. Every read of
// the model output goes through here.
fn model_output(mi: u32) -> f32 {
    let u = model_out[mi];
    if (p.guidance_offset == 0u) {
        return u;
    }
    let c = model_out[mi + p.guidance_offset];
    return u + p.guidance_scale * (c - u);
}

fn raw_x0(x: f32, m: f32) -> f32 {
    return p.x0_from_sample * x + p.x0_from_model * m;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn step(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = (group.y * groups.x + group.x) * WORKGROUP_SIZE + local;
    if (i >= p.total) {
        return;
    }
    let b = i / p.sample_stride;
    let mi = b * p.model_stride + (i - b * p.sample_stride);
    let x = sample[i];
    let m = model_output(mi);
    var x0 = raw_x0(x, m);
    if (p.clip_mode == 1u) {
        x0 = clamp(x0, -p.clip_range, p.clip_range);
    } else if (p.clip_mode == 2u) {
        let s = thresholds[b];
        x0 = clamp(x0, -s, s) / s;
    }
    let eps = p.eps_from_sample * x + p.eps_from_model * m + p.eps_from_x0 * x0;
    var prev = p.prev_from_x0 * x0 + p.prev_from_eps * eps;
    var xs = x;
    if (p.history_mode != 0u) {
        let q = select(eps, x0, p.history_mode == 1u);
        let h0 = history[p.history_read0 * p.total + i];
        let h1 = history[p.history_read1 * p.total + i];
        let h2 = history[p.history_read2 * p.total + i];
        prev += p.history_coef0 * h0 + p.history_coef1 * h1 + p.history_coef2 * h2;
        if (p.last_mode == 2u) {
            xs = p.corr_from_last * history[p.last_slot * p.total + i] + p.corr_from_stored * q
                + p.corr_coef0 * h0 + p.corr_coef1 * h1 + p.corr_coef2 * h2;
        }
        if (p.last_mode != 0u) {
            history[p.last_slot * p.total + i] = xs;
        }
        history[p.history_write * p.total + i] = q;
    }
    prev += p.prev_from_sample * xs;
    switch p.variance_mode {
        case 1u: {
            prev += p.noise_std * noise[i];
        }
        case 2u: {
            prev += sqrt(model_output(mi + p.sample_stride)) * noise[i];
        }
        case 3u: {
            let frac = (model_output(mi + p.sample_stride) + 1.0) / 2.0;
            let log_variance = frac * p.max_log + (1.0 - frac) * p.min_log;
            prev += exp(0.5 * log_variance) * noise[i];
        }
        default: {}
    }
    if (p.inpaint == 1u) {
        let mask = history[p.total + i];
        let known = p.known_image * history[i] + p.known_noise * noise[i];
        prev = mask * known + (1.0 - mask) * prev;
    }
    sample[i] = prev;
    if (p.write_input == 1u) {
        model_in[i] = prev * p.input_scale;
    }
    if (p.write_x0 == 1u) {
        x0_out[i] = x0;
    }
}

var<workgroup> histogram: array<atomic<u32>, 256>;
var<workgroup> chosen_digit: u32;
var<workgroup> chosen_rank: u32;

// The bits of the `rank`-th smallest |x0| (0-based) of sample `b`, by a 4-pass radix select
// over the float bit patterns (for non-negative floats, unsigned order is numeric order).
fn select_rank(b: u32, local: u32, rank: u32) -> u32 {
    var prefix = 0u;
    var mask = 0u;
    var remaining = rank;
    for (var round = 0u; round < 4u; round++) {
        let shift = 24u - 8u * round;
        atomicStore(&histogram[local], 0u);
        workgroupBarrier();
        for (var r = local; r < p.sample_stride; r += WORKGROUP_SIZE) {
            let x = sample[b * p.sample_stride + r];
            let m = model_output(b * p.model_stride + r);
            let bits = bitcast<u32>(abs(raw_x0(x, m)));
            if ((bits & mask) == prefix) {
                atomicAdd(&histogram[(bits >> shift) & 255u], 1u);
            }
        }
        workgroupBarrier();
        if (local == 0u) {
            var below = 0u;
            var digit = 255u;
            for (var d = 0u; d < 256u; d++) {
                let count = atomicLoad(&histogram[d]);
                if (remaining < below + count) {
                    digit = d;
                    break;
                }
                below += count;
            }
            chosen_digit = digit;
            chosen_rank = remaining - below;
        }
        let digit = workgroupUniformLoad(&chosen_digit);
        remaining = workgroupUniformLoad(&chosen_rank);
        prefix |= digit << shift;
        mask |= 255u << shift;
    }
    return prefix;
}

// One workgroup per sample: s = clamp(quantile(|x0|, ratio), 1, sample_max_value), with
// torch.quantile's linear interpolation between the ranks the host computed.
@compute @workgroup_size(WORKGROUP_SIZE)
fn threshold(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let b = group.x;
    let low = bitcast<f32>(select_rank(b, local, p.quantile_low));
    let high = bitcast<f32>(select_rank(b, local, p.quantile_high));
    if (local == 0u) {
        let w = p.quantile_weight;
        var q: f32;
        if (w < 0.5) {
            q = low + w * (high - low);
        } else {
            q = high - (high - low) * (1.0 - w);
        }
        thresholds[b] = clamp(q, 1.0, p.threshold_max);
    }
}
