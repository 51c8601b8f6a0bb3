//! Broken config.json files, and weights that disagree with their config.

use super::*;

#[test]
fn config_files() {
    let (_, weights) = fixture_files();
    let cases: Vec<(&str, String, Want)> = vec![
        ("empty", String::new(), Want::Config("(file)", "not JSON")),
        (
            "not JSON",
            "{ \"in_channels\": ".into(),
            Want::Config("(file)", "not JSON"),
        ),
        (
            "a JSON list",
            "[1, 2]".into(),
            Want::Config("(file)", "expected a JSON object"),
        ),
        (
            "another model class",
            config_with("_class_name", Some("\"UNet2DConditionModel\"")),
            Want::Config("_class_name", "only UNet2DModel is supported"),
        ),
        (
            "unknown key",
            config_with("cross_attention_dim", Some("768")),
            Want::Config("cross_attention_dim", "not a UNet2DModel parameter"),
        ),
        (
            "channels as a string",
            config_with("in_channels", Some("\"3\"")),
            Want::Config("in_channels", "expected a non-negative integer, got \"3\""),
        ),
        (
            "negative layers",
            config_with("layers_per_block", Some("-1")),
            Want::Config(
                "layers_per_block",
                "expected a non-negative integer, got -1",
            ),
        ),
        (
            "fractional channels",
            config_with("out_channels", Some("2.5")),
            Want::Config("out_channels", "expected a non-negative integer, got 2.5"),
        ),
        (
            "flag as a number",
            config_with("flip_sin_to_cos", Some("1")),
            Want::Config("flip_sin_to_cos", "expected true or false"),
        ),
        (
            "channel list as a number",
            config_with("block_out_channels", Some("64")),
            Want::Config(
                "block_out_channels",
                "expected a list of non-negative integers",
            ),
        ),
        (
            "channel list with a string",
            config_with("block_out_channels", Some("[32, \"64\", 64]")),
            Want::Config(
                "block_out_channels",
                "entry 1: expected a non-negative integer",
            ),
        ),
        (
            "epsilon as a string",
            config_with("norm_eps", Some("\"1e-6\"")),
            Want::Config("norm_eps", "expected a number"),
        ),
        (
            "unknown down block type",
            config_with(
                "down_block_types",
                Some(r#"["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]"#),
            ),
            Want::Config(
                "down_block_types",
                "entry 1: unsupported value \"CrossAttnDownBlock2D\"",
            ),
        ),
        (
            "unknown up block type",
            config_with(
                "up_block_types",
                Some(r#"["UpBlock2D", "UpBlock3D", "UpBlock2D"]"#),
            ),
            Want::Config("up_block_types", "unsupported value \"UpBlock3D\""),
        ),
        (
            "unknown mid block type",
            config_with("mid_block_type", Some("\"UNetMidBlock2DCrossAttn\"")),
            Want::Config("mid_block_type", "supported: UNetMidBlock2D, null"),
        ),
        (
            "unsupported activation",
            config_with("act_fn", Some("\"gelu\"")),
            Want::Config("act_fn", "unsupported value \"gelu\""),
        ),
        (
            "unsupported time embedding",
            config_with("time_embedding_type", Some("\"fourier\"")),
            Want::Config("time_embedding_type", "\"fourier\""),
        ),
        (
            "groups not dividing the channels",
            config_with("norm_num_groups", Some("12")),
            Want::Config("norm_num_groups", "12 groups do not divide the 32 channels"),
        ),
        (
            "attention groups not dividing the channels",
            config_with("attn_norm_num_groups", Some("24")),
            Want::Config(
                "attn_norm_num_groups",
                "24 groups do not divide the 64 channels",
            ),
        ),
        (
            "head size not dividing the channels",
            config_with("attention_head_dim", Some("48")),
            Want::Config("attention_head_dim", "48 does not divide the 64 channels"),
        ),
        (
            "fewer up blocks than channel entries",
            config_with("up_block_types", Some(r#"["UpBlock2D", "AttnUpBlock2D"]"#)),
            Want::Config(
                "up_block_types",
                "has 2 entries but block_out_channels has 3",
            ),
        ),
        (
            "more down blocks than channel entries",
            config_with(
                "down_block_types",
                Some(r#"["DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"]"#),
            ),
            Want::Config(
                "down_block_types",
                "has 4 entries but block_out_channels has 3",
            ),
        ),
        (
            "no blocks",
            config_with("block_out_channels", Some("[]")),
            Want::Config("block_out_channels", "expected at least one block"),
        ),
        (
            "zero channels",
            config_with("block_out_channels", Some("[32, 0, 64]")),
            Want::Config("block_out_channels", "entry 1 is 0"),
        ),
        (
            "zero input channels",
            config_with("in_channels", Some("0")),
            Want::Config("in_channels", "expected a value > 0, got 0"),
        ),
        (
            "zero groups",
            config_with("norm_num_groups", Some("0")),
            Want::Config("norm_num_groups", "expected a value > 0"),
        ),
        (
            "a trillion channels",
            config_with("block_out_channels", Some("[32, 1099511627776, 64]")),
            Want::Config(
                "block_out_channels",
                "entry 1 is 1099511627776, over the limit",
            ),
        ),
        (
            "a billion layers per block",
            config_with("layers_per_block", Some("1000000000")),
            Want::Config("layers_per_block", "over the limit of 64"),
        ),
        (
            "huge time embedding",
            config_with("time_embedding_dim", Some("18446744073709551615")),
            Want::Config("time_embedding_dim", "over the limit"),
        ),
        (
            "zero epsilon",
            config_with("norm_eps", Some("0")),
            Want::Config("norm_eps", "expected a finite value > 0"),
        ),
        (
            "padding 2",
            config_with("downsample_padding", Some("2")),
            Want::Config("downsample_padding", "supported: 0, 1"),
        ),
        (
            "frequency shift dividing by zero",
            config_with("freq_shift", Some("16")),
            Want::Config("freq_shift", "divide by zero"),
        ),
    ];
    for (case, text, want) in cases {
        let dir = model_folder(&case.replace(' ', "_"), text.as_bytes(), &weights);
        let path = dir.join("config.json");
        let source = path.display().to_string();
        check(
            case,
            "config.json",
            UnetConfig::from_json_str(&text, "config.json"),
            want,
        );
        check(case, &source, UnetConfig::from_file(&path), want);
        check(case, &source, Unet::load(gpu(), &dir), want);
    }

    // Not UTF-8: an IO error (invalid data) naming the file.
    let dir = model_folder("non_utf8_config", b"{\"in_channels\": \xff}", &weights);
    let path = dir.join("config.json");
    check(
        "non-UTF-8 config",
        &path.display().to_string(),
        Unet::load(gpu(), &dir),
        Want::Io(ErrorKind::InvalidData),
    );

    // Folders without the files.
    let empty = scratch("empty_folder");
    check(
        "empty folder",
        &empty.display().to_string(),
        Unet::load(gpu(), &empty),
        Want::Config("(folder)", "not a diffusers model folder"),
    );
    let absent = empty.join("absent");
    check(
        "missing folder",
        &absent.display().to_string(),
        Unet::load(gpu(), &absent),
        Want::Io(ErrorKind::NotFound),
    );
    let only_config = scratch("only_config");
    std::fs::write(only_config.join("config.json"), "{}").unwrap();
    check(
        "config without weights",
        &only_config
            .join("diffusion_pytorch_model.safetensors")
            .display()
            .to_string(),
        Unet::load(gpu(), &only_config),
        Want::Io(ErrorKind::NotFound),
    );
}

#[test]
fn weights_that_do_not_match_the_config() {
    let (_, weights) = fixture_files();
    let renamed = {
        let (len, _) = header_of(&weights);
        let header = std::str::from_utf8(&weights[8..8 + len]).unwrap();
        // Same length, so the offsets still hold.
        let header = header.replacen("\"conv_out.bias\"", "\"conv_out.bia5\"", 1);
        [&weights[..8], header.as_bytes(), &weights[8 + len..]].concat()
    };
    let cases: Vec<(&str, String, Vec<u8>, Want)> = vec![
        (
            "one input channel, three in the file",
            config_with("in_channels", Some("1")),
            weights.clone(),
            Want::Checkpoint(
                "conv_in.weight",
                "expected shape [32, 1, 3, 3], found [32, 3, 3, 3]",
            ),
        ),
        (
            "wider blocks than the file",
            config_with("block_out_channels", Some("[32, 64, 128]")),
            weights.clone(),
            Want::Checkpoint(
                "down_blocks.2.resnets.0.conv1.weight",
                "expected shape [128, 64, 3, 3], found [64, 64, 3, 3]",
            ),
        ),
        (
            "more layers than the file",
            config_with("layers_per_block", Some("2")),
            weights.clone(),
            Want::Checkpoint(
                "down_blocks.0.resnets.1.norm1.weight",
                "similar names in the file: `down_blocks.0.resnets.0.norm1.weight`",
            ),
        ),
        (
            "no mid block, one in the file",
            config_with("mid_block_type", Some("null")),
            weights.clone(),
            Want::Checkpoint("(file)", "30 tensors are not used by the config"),
        ),
        (
            "class embedding missing from the file",
            config_with("num_class_embeds", Some("10")),
            weights.clone(),
            Want::Checkpoint("class_embedding.weight", "missing"),
        ),
        (
            "a tensor renamed",
            config_with("in_channels", Some("3")),
            renamed,
            Want::Checkpoint(
                "conv_out.bias",
                "similar names in the file: `conv_out.bia5`",
            ),
        ),
    ];
    for (case, config, weights, want) in cases {
        let dir = model_folder(&case.replace(' ', "_"), config.as_bytes(), &weights);
        let file = dir.join("diffusion_pytorch_model.safetensors");
        check(
            case,
            &file.display().to_string(),
            Unet::load(gpu(), &dir),
            want,
        );
    }
}
