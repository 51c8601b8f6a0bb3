//! Command-line misuse.

use super::*;

/// Runs the command-line tool with `args` (and a backtrace requested, which must not appear).
fn cli(args: &[&str]) -> std::process::Output {
    let runtime = scratch("xdg-runtime");
    let mut command = Command::new(env!("CARGO_BIN_EXE_diffusion-wgpu"));
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // Mesa prints an "error:" line of its own without it.
        command.env("XDG_RUNTIME_DIR", runtime);
    }
    command
        .env("RUST_BACKTRACE", "1")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn command_line_misuse() {
    let model = fixture_dir("unet_small").display().to_string();
    let (config, weights) = fixture_files();
    let dir = scratch("cli");
    let truncated = model_folder("cli_truncated", config.as_bytes(), &weights[..1000]);
    let bad_config = model_folder(
        "cli_bad_config",
        config_with("norm_num_groups", Some("12")).as_bytes(),
        &weights,
    );
    // A NaN in a tensor whose name holds a newline: the message must stay on one line.
    let newline_name = model_folder(
        "cli_newline_name",
        config.as_bytes(),
        &raw_file(
            &format!("{{{}}}", f32_entry("bad\\nname", "[1]", "[0,4]")),
            &f32::NAN.to_le_bytes(),
        ),
    );
    let bad_scheduler = dir.join("scheduler_config.json");
    std::fs::write(&bad_scheduler, r#"{"beta_end": 2}"#).unwrap();
    let no_x_t = dir.join("no_x_t.safetensors");
    std::fs::write(
        &no_x_t,
        raw_file(&format!("{{{}}}", f32_entry("y", "[1]", "[0,4]")), &[0; 4]),
    )
    .unwrap();
    let noise = dir.join("noise.safetensors");
    std::fs::write(
        &noise,
        raw_file(
            &format!("{{{}}}", f32_entry("noise", "[1,1,1,28,28]", "[0,3136]")),
            &[0; 3136],
        ),
    )
    .unwrap();
    let nan_x_t = dir.join("nan_x_t.safetensors");
    std::fs::write(
        &nan_x_t,
        raw_file(
            &format!("{{{}}}", f32_entry("x_T", "[1,1,28,28]", "[0,3136]")),
            &[[0; 3132].as_slice(), &f32::NAN.to_le_bytes()].concat(),
        ),
    )
    .unwrap();
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file").unwrap();
    let model_file = dir.join("config_only.json");
    std::fs::write(&model_file, "{}").unwrap();
    let s = |p: &Path| p.display().to_string();
    let unwritable = s(&dir.join("no_such_folder").join("out.safetensors"));

    // Our errors: exit code 1 and exactly one line, `error: ...`, naming the problem.
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["sample".into(), "--model".into(), s(&dir.join("absent"))],
            "model folder not found",
        ),
        (
            vec!["sample".into(), "--model".into(), s(&model_file)],
            "found a file",
        ),
        (
            vec!["sample".into(), "--model".into(), s(&truncated)],
            "truncated",
        ),
        (
            vec!["sample".into(), "--model".into(), s(&bad_config)],
            "`norm_num_groups`",
        ),
        (
            vec!["sample".into(), "--model".into(), s(&newline_name)],
            "tensor `bad\\nname`",
        ),
        (
            vec![
                "sample".into(),
                "--model".into(),
                model.clone(),
                "--steps".into(),
                "0".into(),
            ],
            "`num_inference_steps`",
        ),
        (
            vec![
                "sample".into(),
                "--model".into(),
                model.clone(),
                "--eta".into(),
                "2".into(),
            ],
            "`eta`: 2 is not in [0, 1]",
        ),
        (
            vec!["toy".into(), "--scheduler-config".into(), s(&bad_scheduler)],
            "`beta_end`",
        ),
        (
            // 12 TB of x_T: refused before anything is drawn or allocated.
            vec![
                "toy".into(),
                "--size".into(),
                "1000000".into(),
                "--batch".into(),
                "1".into(),
            ],
            "tensor `sample`",
        ),
        (
            vec![
                "sample".into(),
                "--init".into(),
                s(&dir.join("absent.safetensors")),
            ],
            "absent.safetensors",
        ),
        (
            vec!["sample".into(), "--init".into(), s(&garbage)],
            "garbage.safetensors",
        ),
        (
            vec!["sample".into(), "--init".into(), s(&nan_x_t)],
            "tensor `x_T`: value 783 (of 784) is NaN",
        ),
        (
            vec!["sample".into(), "--init".into(), s(&no_x_t)],
            "tensor `x_T`: missing",
        ),
        (
            vec![
                "sample".into(),
                "--noise".into(),
                s(&noise),
                "--steps".into(),
                "1".into(),
                "--batch".into(),
                "1".into(),
            ],
            "--noise needs --init",
        ),
        (
            vec![
                "sample".into(),
                "--steps".into(),
                "1".into(),
                "--batch".into(),
                "1".into(),
                "--out".into(),
                unwritable,
            ],
            "no_such_folder",
        ),
        (
            vec![
                "forward".into(),
                "--model".into(),
                model.clone(),
                "--input".into(),
                s(&no_x_t),
                "--out".into(),
                s(&dir.join("eps.safetensors")),
            ],
            "tensor `sample`: missing",
        ),
    ];
    for (args, says) in cases {
        let output = cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
        assert!(
            errors[0].contains(says),
            "{args:?}: `{}` lacks `{says}`",
            errors[0]
        );
        // Other lines are log warnings (e.g. about a software adapter), never a trace.
        assert!(
            stderr
                .lines()
                .all(|l| l.starts_with("error:") || l.contains("WARN")),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }

    // clap's usage errors: exit code 2, its standard short message, no trace.
    for (args, says) in [
        (
            vec!["sample", "--steps", "many"],
            "invalid value 'many' for '--steps <STEPS>'",
        ),
        (
            vec!["sample", "--sampler", "lms"],
            "invalid value 'lms' for '--sampler",
        ),
        (vec!["render"], "unrecognized subcommand 'render'"),
        (
            vec!["forward", "--model", "m"],
            "the following required arguments were not provided",
        ),
        (vec!["sample", "--batch", "-3"], "unexpected argument '-3'"),
    ] {
        let output = cli(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
}
