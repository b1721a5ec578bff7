//! `sana-run` on hostile input, as a user or a script would give it: every case must exit non-zero with a one-line
//! `error:` naming the culprit, never panic or abort, write nothing, and finish in bounded time under an
//! address-space limit (so an oversize request that tried to allocate would fail the case, not the machine).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{copy_dir, scratch, tiny_model, Scratch};
use sana::tensor_file::write_f32;
use sana::HostTensor;

/// 8 GiB of address space: the tiny model needs far less; a request that allocated by its size would not fit.
const ADDRESS_SPACE_KIB: u64 = 8 << 20;
const TIME_LIMIT: Duration = Duration::from_secs(60);

/// A case: `sana-run args…` in the scratch folder `dir`, which must hold only `inputs` afterwards.
fn expect_clean_failure(dir: &Path, args: &[&str], culprit: &str) {
    let before = listing(dir);
    let start = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -v {ADDRESS_SPACE_KIB}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_sana-run"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let what = format!("sana-run {}", args.join(" "));
    // 1: our error, 2: a usage error from the argument parser; a panic exits 101, an abort or a signal has no code.
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "{what}: exit status {:?}\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{what}: panicked\n{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{what}: not one error line: {stderr}");
    assert!(
        errors[0].contains(culprit),
        "{what}: the error does not name `{culprit}`: {}",
        errors[0]
    );
    assert_eq!(listing(dir), before, "{what}: files were left behind");
    assert!(took < TIME_LIMIT, "{what}: took {took:?}");
}

/// A one-tensor F32 safetensors file written by hand: the crate's own writer refuses NaN, and these inputs must hold it.
fn write_raw_f32(path: &Path, name: &str, shape: &[usize], data: &[f32]) {
    let header = format!(
        r#"{{"{name}":{{"dtype":"F32","shape":{shape:?},"data_offsets":[0,{}]}}}}"#,
        4 * data.len()
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

/// A quick one-step cpu generation on the tiny model in `dir`, writing `output`; it must succeed.
fn generate_ok(dir: &Path, output: &str) -> std::process::Output {
    let model = tiny_model();
    let out = Command::new(env!("CARGO_BIN_EXE_sana-run"))
        .args([
            "--engine",
            "cpu",
            "--model",
            model.to_str().unwrap(),
            "--height",
            "32",
        ])
        .args([
            "--width",
            "32",
            "--steps",
            "1",
            "--no-resolution-binning",
            "--output",
            output,
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `sana-run` with `extra` flags over those of a quick cpu generation on `model` writing `out.png` (a flag in `extra`
/// replaces the quick one: clap refuses a flag given twice).
fn run(dir: &Path, model: &Path, extra: &[&str], culprit: &str) {
    let model = model.to_str().unwrap();
    let quick = [
        ("--engine", "cpu"),
        ("--model", model),
        ("--height", "32"),
        ("--width", "32"),
        ("--steps", "2"),
        ("--output", "out.png"),
    ];
    let mut args: Vec<&str> = vec!["--no-resolution-binning"];
    for (flag, value) in quick {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend(extra);
    expect_clean_failure(dir, &args, culprit);
}

/// The tiny model with key `key` of `file` (relative to the model folder) set to the JSON literal `value`. Text
/// surgery, not a JSON round trip: real configs hold `-Infinity`, which strict JSON parsers refuse.
fn model_with(test: &str, file: &str, key: &str, value: &str) -> Scratch {
    let dir = scratch(test);
    copy_dir(&tiny_model(), &dir);
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let quoted = format!("\"{key}\":");
    let edited = match text.find(&quoted) {
        Some(at) => {
            let start = at + quoted.len();
            // A list ends at its bracket (the fixtures' lists of numbers hold no nested lists), a scalar at the line.
            let end = if text[start..].trim_start().starts_with('[') {
                start + text[start..].find(']').unwrap() + 1
            } else {
                start + text[start..].find([',', '\n', '}']).unwrap()
            };
            format!("{} {value}{}", &text[..start], &text[end..])
        }
        None => text.replacen('{', &format!("{{{quoted} {value},"), 1),
    };
    std::fs::write(&path, edited).unwrap();
    dir
}

#[test]
fn oversize_requests_are_refused_before_any_allocation() {
    let dir = scratch("hostile-sizes");
    let model = tiny_model();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--height", "1000000", "--width", "1000000"],
            "--height 1000000 exceeds",
        ),
        (
            &["--height", "4611686018427387904"],
            "--height 4611686018427387904 exceeds",
        ),
        (&["--width", "16416"], "--width 16416 exceeds"),
        // Within the side limit, beyond the memory limit: refused before the latents are drawn, naming the stage.
        (
            &["--height", "16384", "--width", "16384"],
            "out of host memory in denoise",
        ),
        (&["--batch", "100000000000"], "--batch 100000000000"),
        (&["--batch", "18446744073709551615"], "--batch"),
        (
            &["--steps", "1000000000000000000"],
            "--steps 1000000000000000000",
        ),
        (&["--steps", "0"], "--steps 0"),
        (&["--height", "40"], "--height 40"),
    ];
    for (extra, culprit) in cases {
        run(&dir, &model, extra, culprit);
    }
    let model = model.to_str().unwrap();
    expect_clean_failure(
        &dir,
        &[
            "eval",
            "encode-prompt",
            "--model",
            model,
            "--prompt",
            "x",
            "--max-sequence-length",
            "1000000000",
            "--output",
            "e.safetensors",
        ],
        "max_sequence_length",
    );
    expect_clean_failure(&dir, &["bench", "--runs", "0", "--engine", "cpu"], "--runs");
}

#[test]
fn non_finite_values_are_errors_not_pictures() {
    let dir = scratch("hostile-non-finite");
    let model = tiny_model();
    run(&dir, &model, &["--guidance", "nan"], "--guidance NaN");
    run(&dir, &model, &["--guidance", "inf"], "--guidance inf");
    // Finite initial latents near f32's largest value: the transformer's first sums overflow, the denoised latents
    // are not finite, and nothing is decoded or written, the latents file included.
    let latents = dir.join("latents-in.safetensors");
    let huge = HostTensor::new(vec![1, 32, 8, 8], vec![3e38; 32 * 64]).unwrap();
    write_f32(&latents, &[("latents", &huge)]).unwrap();
    run(
        &dir,
        &model,
        &[
            "--latents",
            "latents-in.safetensors",
            "--save-latents",
            "l.safetensors",
        ],
        "denoise (step 1 of 2): ",
    );
    let mut values = vec![0.5f32; 32 * 64];
    values[3] = f32::NAN;
    write_raw_f32(&latents, "latents", &[1, 32, 8, 8], &values);
    run(
        &dir,
        &model,
        &["--latents", "latents-in.safetensors"],
        "--latents hold 1 NaN",
    );
}

#[test]
fn user_tensors_of_any_rank_give_errors_not_panics() {
    let dir = scratch("hostile-ranks");
    let model = tiny_model();
    for shape in [vec![], vec![0], vec![1, 2], vec![1, 32, 0, 0]] {
        let n = shape.iter().product::<usize>();
        let file = dir.join("latents-in.safetensors");
        write_f32(
            &file,
            &[(
                "latents",
                &HostTensor::new(shape.clone(), vec![0.25; n]).unwrap(),
            )],
        )
        .unwrap();
        run(
            &dir,
            &model,
            &["--latents", "latents-in.safetensors"],
            "--latents",
        );
    }
}

#[test]
fn meaningless_config_values_are_refused_naming_the_field() {
    let cases = [
        ("scheduler/scheduler_config.json", "flow_shift", "0.0"),
        (
            "scheduler/scheduler_config.json",
            "num_train_timesteps",
            "0",
        ),
        ("vae/config.json", "scaling_factor", "0.0"),
        ("transformer/config.json", "norm_eps", "-1e-6"),
        ("transformer/config.json", "num_layers", "0"),
        (
            "text_encoder/config.json",
            "num_hidden_layers",
            "10000000000",
        ),
        ("text_encoder/config.json", "rms_norm_eps", "-1.0"),
        // Found by tests/loader_fuzz.rs: a stage of 2⁶³ layers made inspect build keys until memory ran out.
        (
            "vae/config.json",
            "decoder_layers_per_block",
            "[1, 1, 9223372036854775807]",
        ),
        (
            "vae/config.json",
            "decoder_block_out_channels",
            "[8, 16, 4294967296]",
        ),
        (
            "transformer/config.json",
            "attention_head_dim",
            "4294967296",
        ),
        ("text_encoder/config.json", "vocab_size", "1000000000000"),
        ("text_encoder/config.json", "hidden_size", "0"),
    ];
    let out = scratch("hostile-configs-out");
    for (file, key, value) in cases {
        let model = model_with(&format!("hostile-config-{key}"), file, key, value);
        run(&out, &model, &[], key);
    }
}

#[test]
fn outputs_are_checked_before_the_models_load() {
    let dir = scratch("hostile-outputs");
    let model = tiny_model();
    run(
        &dir,
        &model,
        &["--output", "no-such-folder/out.png"],
        "folder does not exist",
    );
    std::fs::create_dir(dir.join("a-folder")).unwrap();
    run(&dir, &model, &["--output", "a-folder"], "is a folder");
    run(
        &dir,
        &model,
        &["--save-latents", "missing/l.safetensors"],
        "folder does not exist",
    );
}

#[test]
fn special_files_are_written_into_and_links_written_through() {
    let dir = scratch("hostile-special");
    // A device is written into, not replaced by a regular file.
    generate_ok(&dir, "/dev/null");
    let null = std::fs::metadata("/dev/null").unwrap();
    assert!(!null.is_file(), "/dev/null was replaced");
    // A link is written through: the file it points to becomes the PNG, the link stays a link.
    std::fs::create_dir(dir.join("real")).unwrap();
    std::os::unix::fs::symlink("real/target.png", dir.join("link.png")).unwrap();
    generate_ok(&dir, "link.png");
    assert!(std::fs::symlink_metadata(dir.join("link.png"))
        .unwrap()
        .file_type()
        .is_symlink());
    let png = std::fs::read(dir.join("real/target.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    assert_eq!(
        listing(&dir.join("real")),
        ["target.png"],
        "no temporary file stays"
    );
}

#[test]
fn a_failed_output_leaves_none_of_the_outputs() {
    let dir = scratch("hostile-all-or-nothing");
    // The PNG's link points into a missing folder: its write fails after the generation, and the latents file,
    // which could have been written, must not appear either.
    std::os::unix::fs::symlink("missing/x.png", dir.join("out.png")).unwrap();
    run(
        &dir,
        &tiny_model(),
        &["--save-latents", "l.safetensors"],
        "out.png",
    );
    // The writer behind every `eval` output and `--save-latents` refuses non-finite tensors and writes nothing.
    let mut values = vec![0.1f32; 8];
    values[5] = f32::INFINITY;
    let t = HostTensor::new(vec![2, 4], values).unwrap();
    let err = write_f32(&dir.join("x.safetensors"), &[("output", &t)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`output` holds 1 NaN or infinite"), "{err}");
    assert_eq!(listing(&dir), ["out.png"], "only the link the test made");
}

#[test]
fn a_dash_writes_the_png_to_standard_output() {
    let dir = scratch("hostile-stdout");
    let out = generate_ok(&dir, "-");
    assert_eq!(
        &out.stdout[..8],
        b"\x89PNG\r\n\x1a\n",
        "a PNG on standard output"
    );
    assert!(listing(&dir).is_empty(), "nothing written to the folder");
    run(
        &dir,
        &tiny_model(),
        &["--output", "-", "--batch", "2"],
        "--batch 2",
    );
    run(&dir, &tiny_model(), &["--vae-tile", "30"], "--vae-tile 30");
}

#[test]
fn a_signal_mid_write_leaves_no_temporary_file() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch("hostile-signal");
    // A FIFO nobody reads: the latents write blocks on it after the PNG was staged beside `out.png`, so the signal
    // arrives while a temporary file exists.
    let fifo = dir.join("latents.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let model = tiny_model();
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sana-run"))
            .args(["--engine", "cpu", "--model", model.to_str().unwrap()])
            .args(["--height", "32", "--width", "32", "--steps", "1"])
            .args(["--no-resolution-binning", "--output", "out.png"])
            .args(["--save-latents", "latents.fifo"])
            .current_dir(&dir)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !listing(&dir).iter().any(|n| n.starts_with(".out.png.")) {
            assert!(start.elapsed() < TIME_LIMIT, "the PNG was never staged");
            assert!(child.try_wait().unwrap().is_none(), "sana-run ended early");
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill on a child process id this test owns.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(signal), "ended by the signal it got");
        assert_eq!(
            listing(&dir),
            ["latents.fifo"],
            "signal {signal}: files were left behind"
        );
    }
}

#[test]
fn outputs_get_the_modes_a_user_expects() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("hostile-modes");
    // The umask of this process, read by setting it (and put back at once).
    // SAFETY: umask only swaps the process's file-creation mask.
    let umask = unsafe {
        let mask = libc::umask(0o022);
        libc::umask(mask);
        mask
    } as u32;
    let mode = |name: &str| {
        std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    generate_ok(&dir, "new.png");
    let t = HostTensor::new(vec![2], vec![0.5, 1.5]).unwrap();
    write_f32(&dir.join("new.safetensors"), &[("x", &t)]).unwrap();
    assert_eq!(
        mode("new.png"),
        0o666 & !umask,
        "a new PNG: 0666 less the umask"
    );
    assert_eq!(
        mode("new.safetensors"),
        0o666 & !umask,
        "a new safetensors file"
    );
    // Replacing a file keeps its mode, as writing into it would.
    std::fs::write(dir.join("kept.png"), b"old").unwrap();
    std::fs::set_permissions(dir.join("kept.png"), std::fs::Permissions::from_mode(0o640)).unwrap();
    generate_ok(&dir, "kept.png");
    assert_eq!(mode("kept.png"), 0o640, "the replaced file's mode");
}

#[test]
fn inspect_and_the_loaders_name_what_is_wrong() {
    let out = scratch("hostile-messages-out");
    // A tokenizer.json that generation refuses is a finding of `inspect`, never "findings: none" with a failure.
    let model = scratch("hostile-messages-tokenizer");
    copy_dir(&tiny_model(), &model);
    std::fs::write(model.join("tokenizer/tokenizer.json"), "{\"broken\": true}").unwrap();
    let dir = model.to_str().unwrap();
    expect_clean_failure(&out, &["inspect", dir], "the problems listed above");
    let report = Command::new(env!("CARGO_BIN_EXE_sana-run"))
        .args(["inspect", dir])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&report.stdout);
    assert!(!report.contains("findings: none"), "{report}");
    assert!(report.contains("  - tokenizer: tokenizer "), "{report}");
    // inspect stays bounded on a config that claims a billion layers.
    let huge = model_with(
        "hostile-messages-layers",
        "transformer/config.json",
        "num_layers",
        "1000000000",
    );
    expect_clean_failure(&out, &["inspect", huge.to_str().unwrap()], "num_layers");
    // A weights file that is a loop of links is named with the OS's reason, not reported as absent.
    let looped = scratch("hostile-messages-loop");
    copy_dir(&tiny_model(), &looped);
    let weights = looped.join("transformer/diffusion_pytorch_model.safetensors");
    std::fs::remove_file(&weights).unwrap();
    std::os::unix::fs::symlink("loop.safetensors", &weights).unwrap();
    std::os::unix::fs::symlink(
        "diffusion_pytorch_model.safetensors",
        looped.join("transformer/loop.safetensors"),
    )
    .unwrap();
    run(
        &out,
        &looped,
        &[],
        "diffusion_pytorch_model.safetensors: Too many levels of symbolic links",
    );
}
