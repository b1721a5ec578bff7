//! `sana-run serve` through a real HTTP client on loopback, on the tiny model and the cpu engine: concurrent clients
//! get the pixels `sana-run` gives for their seeds, batched; every error class is OpenAI-shaped; a burst past
//! `--max-queue` is refused with Retry-After and nothing hangs; a client that leaves cancels its generation; /health
//! and /metrics; SIGTERM finishes in-flight work (or cancels it at the deadline) and exits 0. On a GPU (CI runs
//! `a_gpu_worker_…` on the software one), a worker replays the step graph kept from its last request of a size.

mod common;
#[path = "common/http.rs"]
mod http;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{scratch, tiny_model};
use http::{receive, request, send, send_bytes, Response};

/// A running `sana-run serve`, killed when dropped; its stderr (the JSON log) collected.
struct Server {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the service on a free port with `flags` and waits until /health says ready.
    fn start(flags: &[&str]) -> Self {
        Self::spawn(flags).ready()
    }

    /// Starts the service on the model in `dir` and waits until /health says ready.
    fn start_on(dir: &Path) -> Self {
        Self::spawn_on("cpu", dir, &[]).ready()
    }

    /// Waits until /health says ready.
    fn ready(self) -> Self {
        let start = Instant::now();
        while self.get("/health").status != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "never ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self
    }

    /// Starts the service and returns once it listens (its models may still be loading).
    fn spawn(flags: &[&str]) -> Self {
        Self::spawn_on("cpu", &tiny_model(), flags)
    }

    /// [`Self::spawn`] on `engine` and the model in `model`.
    fn spawn_on(engine: &str, model: &Path, flags: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sana-run"))
            .args(["serve", "--engine", engine])
            .args(["--host", "127.0.0.1", "--port", "0", "--model"])
            .arg(model)
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("first line: {line:?}"))
            .to_string();
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self { child, addr, log }
    }

    fn get(&self, path: &str) -> Response {
        request(&self.addr, "GET", path, &[], "")
    }

    fn generate(&self, body: &serde_json::Value) -> Response {
        request(
            &self.addr,
            "POST",
            "/v1/images/generations",
            &[],
            &body.to_string(),
        )
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn metrics(&self) -> String {
        let m = self.get("/metrics");
        assert_eq!(m.status, 200);
        m.text()
    }

    /// Sends SIGTERM and waits (at most `within`) for the exit status.
    fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) },
            0
        );
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < within,
                "still running {within:?} after SIGTERM: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request body for a 64×64 image in `steps` steps, as `sana-run --width 64 --height 64 --no-resolution-binning`.
fn body(prompt: &str, seed: u64, n: usize, steps: usize) -> serde_json::Value {
    serde_json::json!({
        "prompt": prompt, "n": n, "size": "64x64", "steps": steps, "seed": seed,
        "resolution_binning": false, "response_format": "b64_json",
    })
}

/// The RGB pixels of a `b64_json` PNG.
fn pixels(b64: &str) -> Vec<u8> {
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    read_png(png::Decoder::new(std::io::Cursor::new(png)))
}

fn read_png<R: std::io::BufRead + std::io::Seek>(decoder: png::Decoder<R>) -> Vec<u8> {
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    buf
}

/// `sana-run` images of `prompt` for seeds `seed`, `seed + 1`, … (`--batch`: image b uses seed + b, as
/// tests/generate_cli.rs checks), in 2 steps on the cpu engine, with `extra` flags.
fn sana_run_images(
    dir: &Path,
    prompt: &str,
    seed: u64,
    count: usize,
    extra: &[&str],
) -> Vec<Vec<u8>> {
    sana_run_images_on("cpu", 2, dir, (prompt, seed, count), extra)
}

/// [`sana_run_images`] on `engine` in `steps` steps.
fn sana_run_images_on(
    engine: &str,
    steps: usize,
    dir: &Path,
    (prompt, seed, count): (&str, u64, usize),
    extra: &[&str],
) -> Vec<Vec<u8>> {
    let flags = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), extra);
    let stem = format!("{}-{engine}-{steps}-{flags:x}", prompt.replace(' ', "-"));
    let out = dir.join(format!("{stem}.png"));
    let status = Command::new(env!("CARGO_BIN_EXE_sana-run"))
        .args(["--engine", engine, "--model"])
        .arg(tiny_model())
        .args(["--prompt", prompt, "--width", "64", "--height", "64"])
        .args(["--steps", &steps.to_string()])
        .args(["--no-resolution-binning", "--seed", &seed.to_string()])
        .args(["--batch", &count.to_string()])
        .args(extra)
        .arg("--output")
        .arg(&out)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    (0..count)
        .map(|i| {
            let path = match count {
                1 => out.clone(),
                _ => dir.join(format!("{stem}-{i}.png")),
            };
            read_png(png::Decoder::new(BufReader::new(
                std::fs::File::open(path).unwrap(),
            )))
        })
        .collect()
}

/// The value of the metric line that starts with `name` (labels included).
fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no `{name}` in:\n{metrics}"))
        .parse()
        .unwrap()
}

#[test]
fn eight_concurrent_clients_get_the_pixels_of_sana_run_for_their_seeds_batched() {
    let server = Server::start(&["--max-batch", "4", "--batch-window", "200"]);
    let prompts = ["a red fox", "a blue whale"];
    // Client i: prompt i % 2, seed 10 + i, one or two images; image k of a request is seed + k.
    let clients: Vec<_> = (0..8usize)
        .map(|i| {
            let body = body(prompts[i % 2], 10 + i as u64, 1 + i % 2, 2).to_string();
            let addr = server.addr.clone();
            std::thread::spawn(move || request(&addr, "POST", "/v1/images/generations", &[], &body))
        })
        .collect();
    let answers: Vec<Response> = clients.into_iter().map(|c| c.join().unwrap()).collect();

    let dir = scratch("serve-pixels");
    let reference: Vec<_> = prompts
        .iter()
        .map(|p| sana_run_images(&dir, p, 10, 10, &[]))
        .collect();
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.status, 200, "client {i}: {}", answer.text());
        let json = answer.json();
        assert!(json["created"].as_u64().unwrap() > 0);
        let data = json["data"].as_array().unwrap();
        assert_eq!(data.len(), 1 + i % 2, "client {i}: n images");
        for (k, image) in data.iter().enumerate() {
            let seed = 10 + i + k;
            assert_eq!(image["seed"], seed, "client {i} image {k}");
            assert!(
                pixels(image["b64_json"].as_str().unwrap()) == reference[i % 2][seed - 10],
                "client {i} image {k}: not the pixels of sana-run --seed {seed}"
            );
        }
    }
    let metrics = server.metrics();
    let generations = metric(&metrics, "sana_batch_images_count");
    assert_eq!(
        metric(&metrics, "sana_batch_images_sum"),
        12.0,
        "four requests of one image and four of two"
    );
    assert!(
        generations < 8.0,
        "requests were merged: {generations} generations for 8 requests"
    );
}

#[test]
fn each_error_class_is_openai_shaped_with_the_right_status_and_param() {
    let dir = scratch("serve-errors");
    let key_file = dir.join("key");
    std::fs::write(&key_file, "s3cret\n").unwrap();
    let server = Server::start(&["--api-key-file", key_file.to_str().unwrap()]);
    let post = |headers: &[(&str, &str)], body: &str| {
        request(
            &server.addr,
            "POST",
            "/v1/images/generations",
            headers,
            body,
        )
    };
    let good = body("a cat", 1, 1, 1).to_string();
    for (headers, what) in [
        (vec![], "no key"),
        (vec![("Authorization", "Bearer wrong")], "wrong key"),
        (vec![("Authorization", "s3cret")], "not a bearer token"),
    ] {
        let r = post(&headers, &good);
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], "authentication_error", "{what}");
    }
    let auth = [("Authorization", "Bearer s3cret")];
    let with = |change: serde_json::Value| {
        let mut b = body("a cat", 1, 1, 1);
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b.to_string()
    };
    let cases = [
        ("{\"prompt\": ".to_string(), None, "malformed JSON"),
        ("[1, 2]".to_string(), None, "not an object"),
        (
            with(serde_json::json!({"prompt": null})),
            Some("prompt"),
            "missing prompt",
        ),
        (
            with(serde_json::json!({"prompt": 7})),
            Some("prompt"),
            "prompt not a string",
        ),
        (
            with(serde_json::json!({"size": "65x64"})),
            Some("size"),
            "size not a multiple of 32",
        ),
        (
            with(serde_json::json!({"size": "64x32768"})),
            Some("size"),
            "size beyond the limit",
        ),
        (
            with(serde_json::json!({"size": "big"})),
            Some("size"),
            "size not WxH",
        ),
        (with(serde_json::json!({"n": 0})), Some("n"), "n = 0"),
        (with(serde_json::json!({"n": 11})), Some("n"), "n = 11"),
        (
            with(serde_json::json!({"steps": 0})),
            Some("steps"),
            "steps = 0",
        ),
        (
            with(serde_json::json!({"seed": -1})),
            Some("seed"),
            "negative seed",
        ),
        (
            with(serde_json::json!({"response_format": "url"})),
            Some("response_format"),
            "url",
        ),
        (
            with(serde_json::json!({"lora": "style"})),
            Some("lora"),
            "lora without --lora-dir",
        ),
    ];
    for (body, param, what) in cases {
        let r = post(&auth, &body);
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        let error = &r.json()["error"];
        assert_eq!(error["type"], "invalid_request_error", "{what}");
        assert_eq!(error["param"].as_str(), param, "{what}: {error}");
        assert!(!error["message"].as_str().unwrap().is_empty(), "{what}");
    }
    assert_eq!(
        post(&auth, &good).status,
        200,
        "the good request with the key"
    );
    assert_eq!(server.get("/health").status, 200, "probes need no key");
    let r = server.get("/v2/nothing");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"].is_string());
    // 400s are counted, and logged one line each with the request's id and status.
    assert_eq!(
        metric(&server.metrics(), "sana_requests_total{status=\"400\"}"),
        13.0
    );
    assert!(server.log().contains("\"status\":401"), "{}", server.log());
}

#[test]
fn lora_requests_get_the_pixels_of_sana_run_with_those_adapters() {
    let dir = scratch("serve-lora");
    let adapters = dir.join("adapters");
    std::fs::create_dir_all(&adapters).unwrap();
    let lora = common::fixtures().join("lora");
    for (file, name) in [("lora_a", "style"), ("lora_b", "detail")] {
        std::fs::copy(
            lora.join(format!("{file}.safetensors")),
            adapters.join(format!("{name}.safetensors")),
        )
        .unwrap();
    }
    let server = Server::start(&[
        "--lora-dir",
        adapters.to_str().unwrap(),
        "--max-batch",
        "4",
        "--batch-window",
        "200",
    ]);
    // Concurrent requests with different adapters: each batch applies its own, whatever ran before it.
    let choices = [
        serde_json::json!("style:0.8"),
        serde_json::json!(["style:0.8", "detail"]),
        serde_json::Value::Null,
        serde_json::json!("style:0.8"),
    ];
    let clients: Vec<_> = choices
        .iter()
        .map(|lora| {
            let mut b = body("a red fox", 3, 1, 2);
            b["lora"] = lora.clone();
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                request(&addr, "POST", "/v1/images/generations", &[], &b.to_string())
            })
        })
        .collect();
    let answers: Vec<Response> = clients.into_iter().map(|c| c.join().unwrap()).collect();

    let (style, detail) = (
        lora.join("lora_a.safetensors"),
        lora.join("lora_b.safetensors"),
    );
    let style = format!("{}:0.8", style.display());
    let detail = detail.to_str().unwrap();
    let unmerged = ["--lora-mode", "unmerged"];
    let reference = [
        sana_run_images(
            &dir,
            "a red fox",
            3,
            1,
            &[&["--lora", &style][..], &unmerged].concat(),
        ),
        sana_run_images(
            &dir,
            "a red fox",
            3,
            1,
            &[&["--lora", &style, "--lora", detail][..], &unmerged].concat(),
        ),
        sana_run_images(&dir, "a red fox", 3, 1, &[]),
    ];
    assert!(
        reference[0] != reference[2] && reference[1] != reference[0],
        "the adapters change the picture"
    );
    // Client i is drawn as reference[expected[i]].
    let expected = [0, 1, 2, 0];
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.status, 200, "client {i}: {}", answer.text());
        let b64 = answer.json()["data"][0]["b64_json"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            pixels(&b64) == reference[expected[i]][0],
            "client {i} ({}): not the pixels of sana-run with those adapters",
            choices[i]
        );
    }
    for (lora, what) in [
        (serde_json::json!("nope"), "unknown adapter"),
        (serde_json::json!("style:heavy"), "weight not a number"),
        (serde_json::json!("style:inf"), "weight not finite"),
        (serde_json::json!(["style", 7]), "not a string"),
        (serde_json::json!(vec!["style"; 9]), "too many adapters"),
    ] {
        let mut b = body("a red fox", 3, 1, 1);
        b["lora"] = lora;
        let r = server.generate(&b);
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], "lora", "{what}");
    }
    assert!(
        server.get("/health").status == 200,
        "bad adapter requests leave the service ready"
    );
}

#[test]
fn a_lora_dir_without_adapters_stops_the_service_at_start() {
    let dir = scratch("serve-lora-empty");
    let out = Command::new(env!("CARGO_BIN_EXE_sana-run"))
        .args(["serve", "--engine", "cpu", "--port", "0", "--model"])
        .arg(tiny_model())
        .arg("--lora-dir")
        .arg(dir.as_ref())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--lora-dir") && stderr.contains("no .safetensors"),
        "{stderr}"
    );
}

#[test]
fn a_burst_past_max_queue_is_refused_with_retry_after_and_the_rest_served() {
    let server = Server::start(&[
        "--max-queue",
        "2",
        "--max-batch",
        "1",
        "--batch-window",
        "0",
    ]);
    let started = Instant::now();
    let clients: Vec<_> = (0..10u64)
        .map(|i| {
            let body = body("a lighthouse", i, 1, 20).to_string();
            let addr = server.addr.clone();
            std::thread::spawn(move || request(&addr, "POST", "/v1/images/generations", &[], &body))
        })
        .collect();
    let answers: Vec<Response> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let served = answers.iter().filter(|r| r.status == 200).count();
    let refused: Vec<_> = answers.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        served + refused.len(),
        10,
        "only 200 or 429: {:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(
        !refused.is_empty(),
        "10 at once past a queue of 2 must refuse some"
    );
    // The queue's two places are always served; a third only when the worker took the first request before the
    // burst filled the queue, which a loaded machine does not promise.
    assert!(served >= 2, "the two queued are served: {served}");
    for r in refused {
        let retry: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!(retry >= 1);
        assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    }
    assert!(started.elapsed() < Duration::from_secs(60), "nothing hangs");
    assert_eq!(metric(&server.metrics(), "sana_queue_depth"), 0.0);
}

#[test]
fn a_client_that_disconnects_cancels_its_generation() {
    let server = Server::start(&["--max-batch", "1"]);
    // A generation of many seconds (400 steps at ~0.1 s on the tiny model), abandoned once it runs.
    let long = send(
        &server.addr,
        "POST",
        "/v1/images/generations",
        &[],
        &body("a long walk", 1, 1, 400).to_string(),
    );
    // Long enough for the worker to take it and run a few steps.
    std::thread::sleep(Duration::from_secs(1));
    drop(long);
    let start = Instant::now();
    let next = server.generate(&body("a short walk", 2, 1, 2));
    assert_eq!(next.status, 200, "{}", next.text());
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "the abandoned generation kept the worker busy for {:?}",
        start.elapsed()
    );
    let metrics = server.metrics();
    assert_eq!(
        metric(&metrics, "sana_requests_total{status=\"499\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "sana_images_total"),
        1.0,
        "the cancelled generation made no image"
    );
    assert!(
        server.log().contains("generation cancelled"),
        "{}",
        server.log()
    );
}

#[test]
fn health_and_metrics_report_the_service() {
    let server = Server::start(&[]);
    assert_eq!(server.get("/health").json()["status"], "ready");
    let r = server.generate(&body("a teapot", 3, 2, 2));
    assert_eq!(r.status, 200, "{}", r.text());
    let m = server.get("/metrics");
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let m = m.text();
    for (name, want) in [
        ("sana_requests_total{status=\"200\"}", Some(1.0)),
        ("sana_queue_depth", Some(0.0)),
        ("sana_ready", Some(1.0)),
        ("sana_batch_images_count", Some(1.0)),
        ("sana_batch_images_sum", Some(2.0)),
        ("sana_images_total", Some(2.0)),
        ("sana_stage_seconds_count{stage=\"queue\"}", Some(1.0)),
        ("sana_stage_seconds_count{stage=\"text_encode\"}", Some(1.0)),
        ("sana_stage_seconds_count{stage=\"denoise\"}", Some(1.0)),
        ("sana_stage_seconds_count{stage=\"decode\"}", Some(1.0)),
        ("sana_stage_seconds_count{stage=\"request\"}", Some(1.0)),
        (
            "sana_stage_seconds_bucket{stage=\"denoise\",le=\"+Inf\"}",
            Some(1.0),
        ),
        ("sana_images_per_second", None),
    ] {
        let got = metric(&m, name);
        if let Some(want) = want {
            assert_eq!(got, want, "{name}");
        } else {
            assert!(got > 0.0, "{name}: {got}");
        }
    }
    assert!(m.contains("# TYPE sana_stage_seconds histogram"));
    assert!(m.contains("# TYPE sana_device_memory_peak_bytes gauge"));
    // One log line for the request: its id, size, steps, batch and stage times. It is written once the answer is
    // sent, so it may trail the response a little on a loaded machine.
    let start = Instant::now();
    let log = loop {
        let log = server.log();
        if log.contains("\"event\":\"request\"") || start.elapsed() > Duration::from_secs(10) {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let line = log
        .lines()
        .find(|l| l.contains("\"event\":\"request\""))
        .unwrap();
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    for field in [
        "id",
        "size",
        "steps",
        "batch",
        "queue_s",
        "text_encode_s",
        "denoise_s",
        "decode_s",
        "total_s",
    ] {
        assert!(!line[field].is_null(), "{field} in {line}");
    }
    assert_eq!(line["size"], "64x64");
}

#[test]
fn sigterm_finishes_in_flight_work_and_exits_0() {
    let mut server = Server::start(&[]);
    let in_flight = send(
        &server.addr,
        "POST",
        "/v1/images/generations",
        &[],
        &body("a sunset", 4, 1, 20).to_string(),
    );
    // Taken by the worker (20 steps take about 2 s here) before the signal.
    std::thread::sleep(Duration::from_millis(500));
    let status = std::thread::scope(|s| {
        let answer = s.spawn(|| receive(in_flight));
        let status = server.terminate(Duration::from_secs(30));
        let answer = answer.join().unwrap();
        assert_eq!(
            answer.status,
            200,
            "the in-flight request is finished: {}",
            answer.text()
        );
        status
    });
    assert!(status.success(), "{status:?}: {}", server.log());
    assert!(server.log().contains("\"event\":\"shutdown\""));
}

#[test]
fn sigterm_cancels_what_is_left_at_the_deadline_and_exits_0() {
    let mut server = Server::start(&["--shutdown-deadline", "1"]);
    let in_flight = send(
        &server.addr,
        "POST",
        "/v1/images/generations",
        &[],
        &body("a very long night", 5, 1, 1000).to_string(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let status = std::thread::scope(|s| {
        let answer = s.spawn(|| receive(in_flight));
        let status = server.terminate(Duration::from_secs(20));
        let answer = answer.join().unwrap();
        assert_eq!(
            answer.status,
            503,
            "cancelled at the deadline: {}",
            answer.text()
        );
        assert!(answer.header("retry-after").is_some());
        status
    });
    assert!(status.success(), "{status:?}");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert!(
        server.log().contains("shutdown_deadline"),
        "{}",
        server.log()
    );
}

#[test]
fn two_workers_each_with_their_own_model_share_the_queue() {
    let server = Server::start(&[
        "--devices",
        "0,1",
        "--max-batch",
        "1",
        "--batch-window",
        "0",
    ]);
    let clients: Vec<_> = (0..6u64)
        .map(|i| {
            let body = body("a harbour", 30 + i, 1, 6).to_string();
            let addr = server.addr.clone();
            std::thread::spawn(move || request(&addr, "POST", "/v1/images/generations", &[], &body))
        })
        .collect();
    for c in clients {
        let r = c.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let log = server.log();
    for device in ["cpu:0", "cpu:1"] {
        assert!(
            log.lines().any(|l| l.contains("\"event\":\"request\"")
                && l.contains(&format!("\"device\":\"{device}\""))),
            "no request served by {device}:\n{log}"
        );
    }
}

#[test]
fn health_and_requests_answer_503_until_the_models_are_loaded() {
    // Four workers' models load (and warm up) on two cores: long enough to be asked while loading.
    let server = Server::spawn(&["--devices", "0,1,2,3"]);
    let health = server.get("/health");
    assert_eq!(health.status, 503, "{}", health.text());
    assert_eq!(health.json()["status"], "loading");
    let early = server.generate(&body("too early", 1, 1, 1));
    assert_eq!(early.status, 503, "{}", early.text());
    assert!(early.header("retry-after").is_some());
    assert_eq!(metric(&server.metrics(), "sana_ready"), 0.0);
    let start = Instant::now();
    while server.get("/health").status != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never ready: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.generate(&body("in time", 1, 1, 1)).status, 200);
}

/// The images API's extensions for perturbed-attention guidance (`pag_scale`, `pag_adaptive_scale`, `pag_layers`)
/// and ControlNet (`control_image` as a base64 PNG, `control_scale`): a PAG request is served (and differs from the
/// plain one of the same seed), and each bad field is a 400 naming it — the tiny model has no ControlNet.
#[test]
fn pag_and_controlnet_extensions_are_served_or_refused_by_field() {
    let server = Server::start(&[]);
    let plain = server.generate(&body("a cat", 3, 1, 1));
    assert_eq!(plain.status, 200, "{}", plain.text());
    let mut pag = body("a cat", 3, 1, 1);
    pag["pag_scale"] = serde_json::json!(2.0);
    pag["pag_adaptive_scale"] = serde_json::json!(0.001);
    pag["pag_layers"] = serde_json::json!(["transformer_blocks.1"]);
    let r = server.generate(&pag);
    assert_eq!(r.status, 200, "{}", r.text());
    let image = |r: &Response| pixels(r.json()["data"][0]["b64_json"].as_str().unwrap());
    assert_ne!(image(&r), image(&plain), "PAG changes the image");

    let png = std::fs::read(common::golden("img2img_init_32x32.png")).unwrap();
    let png = base64::engine::general_purpose::STANDARD.encode(png);
    let cases = [
        (
            serde_json::json!({"pag_scale": 2, "pag_layers": ["transformer_blocks.9"]}),
            "pag_layers",
        ),
        (
            serde_json::json!({"pag_scale": 2, "pag_layers": "transformer_blocks.0"}),
            "pag_layers",
        ),
        (serde_json::json!({"pag_scale": -1}), "pag_scale"),
        (serde_json::json!({"pag_scale": "high"}), "pag_scale"),
        (serde_json::json!({"control_image": png}), "control_image"),
        (
            serde_json::json!({"control_image": "not base64!"}),
            "control_image",
        ),
        (serde_json::json!({"control_scale": 0.5}), "control_scale"),
    ];
    for (change, param) in cases {
        let mut b = body("a cat", 3, 1, 1);
        for (k, v) in change.as_object().unwrap() {
            b[k] = v.clone();
        }
        let r = server.generate(&b);
        assert_eq!(r.status, 400, "{change}: {}", r.text());
        assert_eq!(
            r.json()["error"]["param"].as_str(),
            Some(param),
            "{change}: {}",
            r.text()
        );
    }
}

/// `POST /v1/images/edits` as OpenAI's clients send it (multipart/form-data: the `image` file part and text
/// fields, `strength` an extension): on a Sana-Sprint folder it is image-to-image, matching `sana-run --init-image`
/// for the same seed; on a folder of another kind, or without its image, a 400 naming the field.
#[test]
fn edits_are_sprint_image_to_image_from_multipart_forms() {
    let png = std::fs::read(common::golden("img2img_init_32x32.png")).unwrap();
    let form = |fields: &[(&str, &str)], image: bool| {
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend(
                format!(
                    "--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .bytes(),
            );
        }
        if image {
            body.extend(b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"in.png\"\r\nContent-Type: image/png\r\n\r\n");
            body.extend(&png);
            body.extend(b"\r\n");
        }
        body.extend(b"--XyZ--\r\n");
        body
    };
    let fields = [
        ("prompt", "a neon sign in the rain"),
        ("size", "32x32"),
        ("seed", "5"),
        ("strength", "0.4"),
        ("resolution_binning", "false"),
    ];
    let post = |server: &Server, body: &[u8]| {
        receive(send_bytes(
            &server.addr,
            "POST",
            "/v1/images/edits",
            &[],
            ("multipart/form-data; boundary=XyZ", body),
        ))
    };
    let dir = scratch("serve-edits");
    let sprint = dir.join("sprint");
    common::copy_dir(&tiny_model(), &sprint);
    std::fs::remove_dir_all(sprint.join("transformer")).unwrap();
    common::copy_dir(
        &common::fixtures().join("variants/sprint/transformer"),
        &sprint.join("transformer"),
    );
    std::fs::write(
        sprint.join("scheduler/scheduler_config.json"),
        r#"{"_class_name": "SCMScheduler", "num_train_timesteps": 1000, "prediction_type": "trigflow", "sigma_data": 0.5}"#,
    )
    .unwrap();
    let server = Server::start_on(&sprint);
    let r = post(&server, &form(&fields, true));
    assert_eq!(r.status, 200, "{}", r.text());
    let got = pixels(r.json()["data"][0]["b64_json"].as_str().unwrap());
    let out = dir.join("cli.png");
    let o = Command::new(env!("CARGO_BIN_EXE_sana-run"))
        .args([
            "--engine",
            "cpu",
            "--model",
            sprint.to_str().unwrap(),
            "--prompt",
            "a neon sign in the rain",
        ])
        .args([
            "--height",
            "32",
            "--width",
            "32",
            "--seed",
            "5",
            "--no-resolution-binning",
        ])
        .args([
            "--init-image",
            common::golden("img2img_init_32x32.png").to_str().unwrap(),
            "--strength",
            "0.4",
        ])
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = read_png(png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&out).unwrap(),
    )));
    assert_eq!(got, want, "the edit's pixels are sana-run's");
    let r = post(&server, &form(&fields, false));
    assert_eq!(
        (r.status, r.json()["error"]["param"].as_str()),
        (400, Some("image")),
        "{}",
        r.text()
    );
    let mut bad = fields.to_vec();
    bad[3] = ("strength", "1.5");
    let r = post(&server, &form(&bad, true));
    assert_eq!(
        (r.status, r.json()["error"]["param"].as_str()),
        (400, Some("strength")),
        "{}",
        r.text()
    );
    drop(server);
    let plain = Server::start(&[]);
    let r = post(&plain, &form(&fields, true));
    assert_eq!(
        (r.status, r.json()["error"]["param"].as_str()),
        (400, Some("image")),
        "{}",
        r.text()
    );
}

/// On a GPU (CI's software one), a worker keeps its denoising step graph between requests: the second request of a
/// size replays the graph the first captured, on its own prompt and seed, and still gets the pixels of `sana-run
/// --engine cuda` (which captures afresh); /metrics counts one capture and one reuse, and the request log lines say
/// `"step_graph": "captured"`, then `"reused"`. Without a usable GPU the test prints why and passes — or fails, with
/// `SANA_REQUIRE_GPU=1`.
#[test]
fn a_gpu_worker_replays_the_step_graph_kept_from_the_last_request_of_its_size() {
    let test = "a_gpu_worker_replays_the_step_graph_kept_from_the_last_request_of_its_size";
    if common::cuda_or_skip(test, sana::engine::StorageDtype::Bf16).is_none() {
        return;
    }
    let dir = scratch("serve-gpu-step-graph");
    let server = Server::spawn_on("cuda", &tiny_model(), &[]).ready();
    for (prompt, seed) in [("a red fox", 3), ("a blue whale", 4)] {
        let answer = server.generate(&body(prompt, seed, 1, 3));
        assert_eq!(answer.status, 200, "{}", answer.text());
        let got = pixels(answer.json()["data"][0]["b64_json"].as_str().unwrap());
        let want = sana_run_images_on("cuda", 3, &dir, (prompt, seed, 1), &[]);
        assert!(
            got == want[0],
            "{prompt}: not the pixels of sana-run --engine cuda --seed {seed}"
        );
    }
    let metrics = server.metrics();
    assert_eq!(
        metric(&metrics, "sana_step_graph_capture_seconds_count"),
        1.0
    );
    assert_eq!(metric(&metrics, "sana_step_graph_reuses_total"), 1.0);
    // The log line of a request is written as its answer goes out: give the second a moment to arrive.
    let ways = || -> Vec<String> {
        let log = server.log();
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|l| l["step_graph"].as_str().map(String::from))
            .collect()
    };
    let start = Instant::now();
    while ways().len() < 2 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ways(), ["captured", "reused"], "log: {}", server.log());
}
