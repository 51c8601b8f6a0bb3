//! Broken safetensors files.

use super::*;

#[test]
fn safetensors_files() {
    let (config, good) = fixture_files();
    let (header_len, header) = header_of(&good);
    let data_start = 8 + header_len;
    let with_length = |length: u64| {
        let mut bytes = good.clone();
        bytes[..8].copy_from_slice(&length.to_le_bytes());
        bytes
    };
    let mut non_utf8 = good.clone();
    non_utf8[8 + 2] = 0xff;
    let mut non_json = good.clone();
    non_json[8] = b'#';
    let i64_file = raw_file(
        r#"{"steps":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#,
        &[0; 16],
    );
    let f16_inf = raw_file(
        r#"{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
        &[0, 0, 0x00, 0x7c],
    );
    let conv_in_len = header["conv_in.weight"]["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .product::<u64>();
    assert_eq!(conv_in_len, 864);

    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "empty file",
            Vec::new(),
            Want::Checkpoint("(header)", "fewer than the 8-byte header length"),
        ),
        (
            "truncated in the header length",
            good[..5].to_vec(),
            Want::Checkpoint("(header)", "fewer than the 8-byte header length"),
        ),
        (
            "truncated in the header",
            good[..8 + header_len / 2].to_vec(),
            Want::Checkpoint("(header)", "truncated"),
        ),
        (
            "truncated right after the header",
            good[..data_start].to_vec(),
            Want::Checkpoint("conv_in.bias", "run past the end"),
        ),
        (
            "truncated in the data",
            good[..good.len() - 100].to_vec(),
            Want::Checkpoint(
                "up_blocks.2.resnets.1.time_emb_proj.weight",
                "run past the end",
            ),
        ),
        (
            "trailing bytes",
            [good.clone(), vec![0; 8]].concat(),
            Want::Checkpoint("(header)", "trailing bytes"),
        ),
        (
            "header length of 3 GB",
            with_length(3 << 30),
            Want::Checkpoint("(header)", "over the limit"),
        ),
        (
            "header length of u64::MAX",
            with_length(u64::MAX),
            Want::Checkpoint("(header)", "over the limit"),
        ),
        (
            "header length past the end",
            with_length(good.len() as u64),
            Want::Checkpoint("(header)", "truncated"),
        ),
        (
            "non-UTF-8 header",
            non_utf8,
            Want::Checkpoint("(header)", "not UTF-8"),
        ),
        (
            "non-JSON header",
            non_json,
            Want::Checkpoint("(header)", "not JSON"),
        ),
        (
            "header a JSON list",
            raw_file("[1, 2]", &[]),
            Want::Checkpoint("(header)", "not an object"),
        ),
        (
            "header entry without offsets",
            raw_file(r#"{"a":{"dtype":"F32","shape":[1]}}"#, &[0; 4]),
            Want::Checkpoint("(header)", "not a valid safetensors header"),
        ),
        (
            "unknown dtype",
            raw_file(
                r#"{"a":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}"#,
                &[0; 4],
            ),
            Want::Checkpoint("(header)", "not a valid safetensors header"),
        ),
        (
            "overlapping offsets",
            raw_file(
                &format!(
                    "{{{},{}}}",
                    f32_entry("a", "[2]", "[0,8]"),
                    f32_entry("b", "[2]", "[4,12]")
                ),
                &[0; 12],
            ),
            Want::Checkpoint("b", "overlap `a`, which ends at 8"),
        ),
        (
            "offsets past the end",
            raw_file(
                &format!(
                    "{{{},{}}}",
                    f32_entry("a", "[2]", "[0,8]"),
                    f32_entry("b", "[4]", "[8,24]")
                ),
                &[0; 16],
            ),
            Want::Checkpoint("b", "run past the end"),
        ),
        (
            "offsets disagreeing with dtype and shape",
            raw_file(
                &format!("{{{}}}", f32_entry("a", "[3,2]", "[0,16]")),
                &[0; 16],
            ),
            Want::Checkpoint("a", "need 24 bytes, but data_offsets [0, 16] hold 16"),
        ),
        (
            "offsets ending before they start",
            raw_file(&format!("{{{}}}", f32_entry("a", "[2]", "[8,0]")), &[0; 8]),
            Want::Checkpoint("a", "end before they start"),
        ),
        (
            "offsets leaving a gap",
            raw_file(
                &format!("{{{}}}", f32_entry("a", "[2]", "[4,12]")),
                &[0; 12],
            ),
            Want::Checkpoint("a", "leave a gap"),
        ),
        (
            "shape overflowing",
            raw_file(
                &format!(
                    "{{{}}}",
                    f32_entry("a", "[4294967296,4294967296,4294967296]", "[0,4]")
                ),
                &[0; 4],
            ),
            Want::Checkpoint("a", "overflows"),
        ),
        (
            "unsupported dtype",
            i64_file,
            Want::Checkpoint("steps", "unsupported dtype I64"),
        ),
        (
            "NaN weight",
            with_value(&good, "conv_in.weight", 17, f32::NAN),
            Want::Checkpoint("conv_in.weight", "value 17 (of 864) is NaN"),
        ),
        (
            "infinite weight",
            with_value(
                &good,
                "mid_block.resnets.0.conv1.bias",
                3,
                f32::NEG_INFINITY,
            ),
            Want::Checkpoint("mid_block.resnets.0.conv1.bias", "value 3 (of 64) is -inf"),
        ),
        (
            "infinite f16 weight",
            f16_inf,
            Want::Checkpoint("h", "value 1 (of 2) is inf"),
        ),
        (
            "legacy and modern attention names both present",
            raw_file(
                &format!(
                    "{{{},{}}}",
                    f32_entry("m.attentions.0.query.weight", "[1]", "[0,4]"),
                    f32_entry("m.attentions.0.to_q.weight", "[1]", "[4,8]")
                ),
                &[0; 8],
            ),
            Want::Checkpoint("m.attentions.0.to_q.weight", "stored twice"),
        ),
    ];
    for (case, bytes, want) in cases {
        let dir = model_folder(&case.replace(' ', "_"), config.as_bytes(), &bytes);
        let path = dir.join("diffusion_pytorch_model.safetensors");
        let file = path.display().to_string();
        check(case, &file, Weights::from_bytes(&bytes, &file), want);
        check(case, &file, Weights::from_file(&path), want);
        check(case, &file, Unet::load(gpu(), &dir), want);
    }

    let absent = scratch("absent").join("absent.safetensors");
    check(
        "missing file",
        &absent.display().to_string(),
        Weights::from_file(&absent),
        Want::Io(ErrorKind::NotFound),
    );
}
