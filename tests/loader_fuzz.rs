//! Seeded random-mutation fuzzing of everything a model folder feeds the loaders (issue 14): configs, the shard
//! index, the tokenizer files and the safetensors headers and data, mutated and loaded the way a user's folder is
//! (`inspect`, `Sana::open`, then a one-step generation when it opens). Every mutant must give `Ok` or an error
//! naming the file or component at fault: no panic, bounded memory (an address-space limit on this test's process)
//! and bounded time.
//!
//! Deterministic: iteration `i` is seeded `SANA_FUZZ_SEED + i` (default seed 1), and a failure prints the seed, the
//! file and the mutation (`SANA_FUZZ_TRACE=1` prints every case first, for a case that aborts). `SANA_FUZZ_SECONDS`
//! bounds the run (default 20; CI runs the default).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{copy_dir, scratch, tiny_model, Rng};
use sana::{Device, Request, Sana};

/// The test process may map at most this much: an allocation sized by a hostile header fails instead.
const ADDRESS_SPACE_BYTES: u64 = 8 << 30;
const ITERATION_LIMIT: Duration = Duration::from_secs(20);

/// A mutation of a file's bytes, described for the failure message.
fn mutate(bytes: &[u8], rng: &mut Rng) -> (Vec<u8>, String) {
    let mut out = bytes.to_vec();
    let pick = |rng: &mut Rng, n: usize| (rng.next_u64() % n.max(1) as u64) as usize;
    // Safetensors headers and JSON numbers are where the loaders make decisions: aim there most of the time.
    let text_end = header_end(bytes).unwrap_or(bytes.len());
    let at = if rng.next_u64().is_multiple_of(4) {
        pick(rng, bytes.len())
    } else {
        pick(rng, text_end)
    };
    match rng.next_u64() % 8 {
        0 => {
            let bit = 1u8 << (rng.next_u64() % 8);
            out[at] ^= bit;
            (out, format!("flip bit {bit:#04x} at byte {at}"))
        }
        1 => {
            out.truncate(at);
            (out, format!("truncate to {at} bytes"))
        }
        2 => {
            let len = 1 + pick(rng, 64);
            let end = (at + len).min(out.len());
            out.drain(at..end);
            (out, format!("delete bytes {at}..{end}"))
        }
        3 => {
            let len = 1 + pick(rng, 64);
            let from = pick(rng, bytes.len().saturating_sub(len));
            let chunk = bytes[from..(from + len).min(bytes.len())].to_vec();
            out.splice(at..at, chunk);
            (out, format!("copy {len} bytes from {from} to {at}"))
        }
        4..=6 => {
            // Replace the number nearest `at` by an extreme one.
            const EXTREMES: [&str; 12] = [
                "0",
                "-1",
                "1e308",
                "-1e308",
                "1e-320",
                "18446744073709551615",
                "9223372036854775807",
                "4294967296",
                "1000000000",
                "NaN",
                "-Infinity",
                "3.5",
            ];
            let value = EXTREMES[pick(rng, EXTREMES.len())];
            match number_at(&out[..text_end.min(out.len())], at) {
                Some((start, end)) => {
                    out.splice(start..end, value.bytes());
                    (out, format!("number at {start}..{end} → {value}"))
                }
                None => (out, "no number found: unchanged".to_string()),
            }
        }
        _ => {
            // The safetensors length prefix (or the first 8 bytes of a JSON file).
            let value =
                [0u64, 1, 7, 8, u64::MAX, (bytes.len() as u64) * 2, 100 << 20][pick(rng, 7)];
            out[..8.min(bytes.len())].copy_from_slice(&value.to_le_bytes()[..8.min(bytes.len())]);
            (out, format!("length prefix → {value}"))
        }
    }
}

/// End of a safetensors header (8-byte length + JSON); `None` for other files (all text).
fn header_end(bytes: &[u8]) -> Option<usize> {
    if bytes.first() == Some(&b'{') {
        return None;
    }
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    (8 + len as usize <= bytes.len()).then_some(8 + len as usize)
}

/// The byte range of the decimal number around or after `at`.
fn number_at(bytes: &[u8], at: usize) -> Option<(usize, usize)> {
    let is_num = |b: u8| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'e' || b == b'E';
    let start = (at..bytes.len()).find(|&i| bytes[i].is_ascii_digit())?;
    let start = (0..=start)
        .rev()
        .take_while(|&i| is_num(bytes[i]))
        .last()
        .unwrap_or(start);
    let end = (start..bytes.len())
        .find(|&i| !is_num(bytes[i]))
        .unwrap_or(bytes.len());
    Some((start, end))
}

/// Limits this process's address space (the loaders run in-process here).
fn limit_address_space() {
    let limit = libc::rlimit {
        rlim_cur: ADDRESS_SPACE_BYTES,
        rlim_max: ADDRESS_SPACE_BYTES,
    };
    // SAFETY: setrlimit only lowers this process's own limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
}

/// What every load of the mutated folder must satisfy; returns whether the folder still generated an image.
fn load_everything(dir: &Path, file: &Path) -> Result<bool, String> {
    let component = file
        .parent()
        .and_then(Path::file_name)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let names_culprit = |e: &sana::Error| {
        let text = e.to_string();
        if text.contains(&name) || text.contains(&component) {
            Ok(())
        } else {
            Err(format!(
                "the error names neither {name} nor {component}: {text}"
            ))
        }
    };
    if let Err(e) = sana::inspect::inspect(dir) {
        names_culprit(&e)?;
    }
    let sana = match Sana::open(dir, Device::Cpu) {
        Ok(sana) => sana,
        Err(e) => return names_culprit(&e).map(|()| false),
    };
    let req = Request::new("a red circle")
        .size(32, 32)
        .steps(1)
        .resolution_binning(false);
    match sana.generate(&req) {
        Ok(out) => {
            if out.latents.data().iter().any(|v| !v.is_finite()) {
                return Err("a generation returned non-finite latents".into());
            }
            Ok(true)
        }
        // A mutated weight value may make any stage non-finite; that error names the stage, not the file.
        Err(sana::Error::NonFinite { .. }) => Ok(false),
        Err(e) => names_culprit(&e).map(|()| false),
    }
}

#[test]
fn mutated_model_folders_give_errors_not_panics() {
    limit_address_space();
    let seed: u64 = std::env::var("SANA_FUZZ_SEED").map_or(1, |s| s.parse().unwrap());
    let budget =
        Duration::from_secs(std::env::var("SANA_FUZZ_SECONDS").map_or(20, |s| s.parse().unwrap()));
    let trace = std::env::var_os("SANA_FUZZ_TRACE").is_some();
    let dir = scratch("loader-fuzz");
    copy_dir(&tiny_model(), &dir);
    let targets: Vec<PathBuf> = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    let originals: Vec<Vec<u8>> = targets.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let start = Instant::now();
    let (mut iterations, mut generated, mut refused) = (0u64, 0u64, 0u64);
    while start.elapsed() < budget {
        let case = seed + iterations;
        let mut rng = Rng::new(case);
        let t = (rng.next_u64() % targets.len() as u64) as usize;
        let (bytes, mutation) = mutate(&originals[t], &mut rng);
        std::fs::write(&targets[t], &bytes).unwrap();
        let what = format!(
            "seed {case}: {} with {mutation}",
            targets[t].strip_prefix(&*dir).unwrap().display()
        );
        if trace {
            // An abort (memory exhausted) cannot be caught: the last case printed is the culprit.
            eprintln!("{what}");
        }
        let began = Instant::now();
        let outcome = std::panic::catch_unwind(|| load_everything(&dir, &targets[t]));
        let took = began.elapsed();
        match outcome {
            Err(_) => panic!("{what}: panicked"),
            Ok(Err(problem)) => panic!("{what}: {problem}"),
            Ok(Ok(true)) => generated += 1,
            Ok(Ok(false)) => refused += 1,
        }
        assert!(took < ITERATION_LIMIT, "{what}: took {took:?}");
        std::fs::write(&targets[t], &originals[t]).unwrap();
        iterations += 1;
    }
    eprintln!(
        "loader fuzz: {iterations} mutants in {:.1} s from seed {seed}: {refused} refused with an error naming the \
         culprit, {generated} still generated",
        start.elapsed().as_secs_f64()
    );
    assert!(iterations > 0);
}
