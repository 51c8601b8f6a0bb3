//! The text encoder (`CLIPTextModel`) against transformers (tests/fixtures/sd/): the final
//! states, the raw penultimate states and diffusers' `clip_skip=1` states for three prompts
//! (plain, empty, one cut at 77 tokens), SD 1.x (`quick_gelu`) and SD 2.x (`gelu`) styles.

mod common;

use std::path::PathBuf;

use common::{fixture, gpu, rel_l2, rel_l2_f64};
use diffusion_wgpu::model::clip_text::{ClipOutput, ClipTextModel};
use diffusion_wgpu::text::PipelineFiles;

/// diffusers' f32-vs-f64 spread here is 3e-7; ours is held to the U-Net's 2e-5.
const TOLERANCE: f64 = 2e-5;

fn load(pipeline: &str, variant: Option<&str>) -> ClipTextModel {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sd")
        .join(pipeline);
    let files = PipelineFiles::open(&root, variant).unwrap();
    let tokenizer = files.tokenizer().unwrap();
    let config = files.text_encoder_config(&tokenizer).unwrap();
    ClipTextModel::from_part(gpu(), &files.text_encoder, config).unwrap()
}

#[test]
fn states_match_transformers() {
    for (pipeline, refs) in [
        ("sd1_tiny", "sd/sd1_refs.safetensors"),
        ("sd2_tiny", "sd/sd2_refs.safetensors"),
    ] {
        let refs = fixture(refs);
        let model = load(pipeline, None);
        let ids = refs["text.input_ids"].u32();
        let layers = model.config().num_hidden_layers;
        let cases = [
            (
                ClipOutput::Final { clip_skip: 0 },
                "text.last_hidden_state_f64",
            ),
            (ClipOutput::Final { clip_skip: 0 }, "text.last_hidden_state"),
            (
                ClipOutput::Hidden { layer: layers - 1 },
                "text.penultimate_hidden_state",
            ),
            (ClipOutput::Final { clip_skip: 1 }, "text.clip_skip_1"),
        ];
        for (output, name) in cases {
            let states = model.forward(&ids, 3, output).unwrap();
            let error = rel_l2(&states, &refs[name].data);
            println!("{pipeline} {name}: {error:.2e}");
            assert!(error < TOLERANCE, "{pipeline} {name}: {error:.2e}");
        }
    }
}

/// The fp16 variant (weights rounded to f16) gives the same states within f16's precision.
#[test]
fn fp16_variant_loads() {
    let refs = fixture("sd/sd2_refs.safetensors");
    let model = load("sd2_tiny", Some("fp16"));
    let states = model
        .forward(
            &refs["text.input_ids"].u32(),
            3,
            ClipOutput::Final { clip_skip: 0 },
        )
        .unwrap();
    let expected: Vec<f64> = refs["text.last_hidden_state_f64"].data.clone();
    let error = rel_l2_f64(
        &states.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
        &expected,
    );
    println!("sd2 fp16 variant: {error:.2e}");
    assert!(error < 5e-3, "{error:.2e}");
}

#[test]
fn bad_ids_are_errors() {
    let model = load("sd1_tiny", None);
    let vocab = model.config().vocab_size as u32;
    assert!(
        model
            .forward(&[0; 78], 1, ClipOutput::Final { clip_skip: 0 })
            .is_err()
    );
    assert!(
        model
            .forward(&[vocab; 4], 1, ClipOutput::Final { clip_skip: 0 })
            .is_err()
    );
    assert!(
        model
            .forward(&[0; 5], 2, ClipOutput::Final { clip_skip: 0 })
            .is_err()
    );
    assert!(
        model
            .forward(&[0; 4], 1, ClipOutput::Final { clip_skip: 2 })
            .is_err()
    );
}
