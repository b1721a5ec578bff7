//! The library's front door on the tiny model: `Sana::open` → `Request` → `generate`/`generate_with`, events and
//! cancellation, the model folder's defaults, batched prompts, reused embeddings, sharing between threads, and the
//! same images as `sana-run`.

mod common;
mod tiny_runs;

use std::process::Command;
use std::sync::Arc;

use common::{relative_error, scratch, tiny_model};
use sana::{Control, Device, Error, Event, Request, Sana, Stage};

fn open() -> Sana {
    Sana::open(tiny_model(), Device::Cpu).unwrap()
}

/// A small request that still runs every stage: two steps with classifier-free guidance.
fn small(prompt: &str) -> Request {
    Request::new(prompt)
        .size(64, 64)
        .steps(2)
        .seed(11)
        .resolution_binning(false)
}

#[test]
fn sana_is_send_and_sync() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Sana>();
}

#[test]
fn events_come_in_stage_order_with_every_step() {
    let sana = open();
    let mut events = Vec::new();
    let out = sana
        .generate_with(&small("a red fox").steps(3), |e| {
            events.push(e);
            Control::Continue
        })
        .unwrap();
    let want = vec![
        Event::Stage {
            stage: Stage::TextEncode,
        },
        Event::Stage {
            stage: Stage::Denoise,
        },
        Event::Step { step: 1, steps: 3 },
        Event::Step { step: 2, steps: 3 },
        Event::Step { step: 3, steps: 3 },
        Event::Stage {
            stage: Stage::Decode,
        },
    ];
    assert_eq!(events, want);
    assert_eq!(out.images.len(), 1);
    assert_eq!((out.images[0].width(), out.images[0].height()), (64, 64));
    assert_eq!(out.images[0].pixels().len(), 64 * 64 * 3);
}

#[test]
fn cancelling_returns_cancelled_and_the_model_stays_usable() {
    let sana = open();
    let req = small("a lighthouse").steps(4);
    let mut steps_seen = 0;
    let err = sana
        .generate_with(&req, |e| {
            if let Event::Step { step, .. } = e {
                steps_seen = step;
                if step == 2 {
                    return Control::Cancel;
                }
            }
            Control::Continue
        })
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert_eq!(steps_seen, 2, "no step is reported after the cancel");
    // Cancelling at a stage boundary works too.
    let err = sana
        .generate_with(&req, |e| match e {
            Event::Stage {
                stage: Stage::Decode,
            } => Control::Cancel,
            _ => Control::Continue,
        })
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    let after = sana.generate(&req).unwrap();
    let fresh = open().generate(&req).unwrap();
    assert_eq!(
        after.images, fresh.images,
        "a cancelled run leaves nothing behind"
    );
}

#[test]
fn a_panicking_callback_does_not_poison_the_model() {
    let sana = open();
    let req = small("a teapot");
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = sana.generate_with(&req, |e| {
            if let Event::Step { .. } = e {
                panic!("the caller's bug");
            }
            Control::Continue
        });
    }));
    assert!(panicked.is_err());
    let after = sana.generate(&req).unwrap();
    assert_eq!(after.images, open().generate(&req).unwrap().images);
}

#[test]
fn defaults_come_from_the_model_folder() {
    let sana = open();
    let plan = sana.plan(&Request::new("a cat")).unwrap();
    let native = sana.transformer_config().sample_size * sana.vae_config().spatial_factor();
    assert_eq!(plan.output_size, (native, native));
    assert_eq!((plan.steps, plan.guidance, plan.cfg), (20, 4.5, true));

    let sprint = tiny_runs::sprint_model("front-door-sprint");
    let sprint = Sana::open(&sprint, Device::Cpu).unwrap();
    assert!(sprint.is_sprint());
    let plan = sprint.plan(&Request::new("a cat")).unwrap();
    assert_eq!(plan.steps, 2, "Sana-Sprint's own step count");
    assert!(!plan.cfg, "Sprint takes guidance as a model input");
    assert_eq!(plan.sampler, sana::Sampler::Scm);
}

#[test]
fn bad_requests_fail_before_any_model_runs_and_name_the_field() {
    let sana = open();
    let cases = [
        (small("x").size(65, 64), "width 65"),
        (small("x").size(64, 0), "height 0"),
        (small("x").steps(0), "steps"),
        (small("x").batch(0), "batch"),
        (small("x").guidance(f32::NAN), "guidance"),
        (small("x").max_sequence_length(0), "max_sequence_length"),
        (small("x").sampler(sana::Sampler::Scm), "SCM"),
        (Request::for_prompts(Vec::<String>::new()), "no prompt"),
        (small("x").batch(2).image_seeds(vec![1]), "image_seeds"),
    ];
    for (req, culprit) in cases {
        let mut ran = false;
        let err = sana
            .generate_with(&req, |_| {
                ran = true;
                Control::Continue
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains(culprit), "{culprit}: {err}");
        assert!(
            !err.contains("--"),
            "library errors name fields, not flags: {err}"
        );
        assert!(!ran, "{culprit}: nothing may run");
    }
}

#[test]
fn several_prompts_in_one_call_match_separate_calls() {
    let sana = open();
    let prompts = ["a red fox", "a blue whale"];
    let together = sana
        .generate(
            &Request::for_prompts(prompts)
                .size(64, 64)
                .steps(2)
                .seed(20)
                .batch(2)
                .resolution_binning(false),
        )
        .unwrap();
    assert_eq!(together.images.len(), 4);
    assert_eq!(together.latents.shape()[0], 4);
    let per = together.latents.len() / 4;
    for (p, prompt) in prompts.iter().enumerate() {
        let alone = sana
            .generate(&small(prompt).seed(20 + 2 * p as u64).batch(2))
            .unwrap();
        let got = &together.latents.data()[2 * p * per..2 * (p + 1) * per];
        let err = relative_error(got, alone.latents.data());
        // The same f32 arithmetic per batch element; only the GEMM blocking of a larger batch may differ.
        assert!(err <= 1e-5, "prompt {p}: {err:e}");
    }
}

#[test]
fn image_k_of_a_merged_batch_is_the_lone_image_of_its_seed() {
    let sana = open();
    // Two callers' requests merged as an HTTP service batches them: "a red fox" with seeds 5 and 6, "a blue whale"
    // with seed 40.
    let merged = sana
        .generate(
            &Request::for_prompts(["a red fox", "a red fox", "a blue whale"])
                .image_seeds(vec![5, 6, 40])
                .size(64, 64)
                .steps(2)
                .seed(11)
                .resolution_binning(false),
        )
        .unwrap();
    for (k, (prompt, seed)) in [("a red fox", 5), ("a red fox", 6), ("a blue whale", 40)]
        .into_iter()
        .enumerate()
    {
        let alone = sana.generate(&small(prompt).seed(seed)).unwrap();
        assert_eq!(
            merged.images[k], alone.images[0],
            "image {k}: {prompt}, seed {seed}"
        );
    }
}

#[test]
fn reused_embeddings_give_the_images_of_the_prompt() {
    let sana = open();
    let req = small("a bowl of cherries").negative_prompt("blurry");
    let embeddings = sana.encode_prompt(&req).unwrap();
    assert_eq!(embeddings.prompt_embeds.shape()[0], 1);
    let from_text = sana.generate(&req).unwrap();
    let from_embeddings = sana
        .generate(
            &Request::from_embeddings(embeddings.clone())
                .size(64, 64)
                .steps(2)
                .seed(11)
                .resolution_binning(false),
        )
        .unwrap();
    assert_eq!(from_text.latents.data(), from_embeddings.latents.data());
    assert_eq!(from_embeddings.times.text_encode.time, Default::default());
    // A different seed from the same embeddings: a different image.
    let other = sana
        .generate(
            &Request::from_embeddings(embeddings)
                .size(64, 64)
                .steps(2)
                .seed(12)
                .resolution_binning(false),
        )
        .unwrap();
    assert_ne!(other.latents.data(), from_text.latents.data());
}

#[test]
fn two_threads_sharing_one_model_get_the_sequential_images() {
    let sana = Arc::new(open());
    let reqs = [small("a red fox").seed(1), small("a green field").seed(2)];
    let sequential: Vec<_> = reqs
        .iter()
        .map(|r| sana.generate(r).unwrap().images)
        .collect();
    let threads: Vec<_> = reqs
        .iter()
        .cloned()
        .map(|r| {
            let sana = Arc::clone(&sana);
            std::thread::spawn(move || sana.generate(&r).unwrap().images)
        })
        .collect();
    for (t, want) in threads.into_iter().zip(&sequential) {
        assert_eq!(&t.join().unwrap(), want);
    }
}

#[test]
fn images_match_sana_run_for_the_same_parameters() {
    let dir = scratch("front-door-cli");
    let png = dir.join("fox.png");
    let status = Command::new(env!("CARGO_BIN_EXE_sana-run"))
        .arg("--model")
        .arg(tiny_model())
        .args([
            "--engine",
            "cpu",
            "--prompt",
            "a red fox",
            "--width",
            "64",
            "--height",
            "64",
        ])
        .args([
            "--steps",
            "2",
            "--seed",
            "11",
            "--no-resolution-binning",
            "--output",
        ])
        .arg(&png)
        .status()
        .unwrap();
    assert!(status.success());
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut pixels).unwrap();
    let lib = open().generate(&small("a red fox")).unwrap();
    assert_eq!(lib.images[0].pixels(), &pixels[..]);
}
