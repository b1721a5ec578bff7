//! A load benchmark of `sana-run serve` on loopback: `CLIENTS` threads send `REQUESTS` image requests in all (each
//! one image, distinct seeds, all the same size and steps so the batcher may merge them) and the program prints
//! requests/s and the p50/p90/p99 latency. Bounded: at most 10,000 requests, and no request is sent after
//! `MAX_SECONDS`; only loopback addresses are accepted.
//!
//! `cargo run --release --example serve_load -- ADDR [REQUESTS [CLIENTS [SIDE [STEPS]]]]`, with a service started as
//! `sana-run serve --model tests/fixtures/tiny-sana --engine cpu --port 8000 --max-batch B` (ADDR 127.0.0.1:8000;
//! defaults 64 requests, 8 clients, 64 px, 2 steps). docs/PERFORMANCE.md gives its figures.

#[path = "../tests/common/http.rs"]
mod http;

use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAX_REQUESTS: usize = 10_000;
const MAX_SECONDS: u64 = 300;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(addr) = args.first().cloned() else {
        eprintln!("usage: serve_load ADDR [REQUESTS [CLIENTS [SIDE [STEPS]]]]");
        std::process::exit(2);
    };
    let number = |i: usize, default: usize| {
        args.get(i).map_or(default, |s| {
            s.parse()
                .unwrap_or_else(|_| panic!("argument {i}: `{s}` is not a number"))
        })
    };
    let (requests, clients) = (number(1, 64).min(MAX_REQUESTS), number(2, 8).max(1));
    let (side, steps) = (number(3, 64), number(4, 2));
    let loopback = addr
        .to_socket_addrs()
        .map(|mut a| a.all(|a| a.ip().is_loopback()))
        .unwrap_or(false);
    assert!(loopback, "{addr}: only loopback addresses are benchmarked");

    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let failures = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, next, latencies, failures) = (
                addr.clone(),
                Arc::clone(&next),
                Arc::clone(&latencies),
                Arc::clone(&failures),
            );
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests || start.elapsed() > Duration::from_secs(MAX_SECONDS) {
                    return;
                }
                let body = serde_json::json!({
                    "prompt": format!("a lighthouse at dusk, study {i}"), "size": format!("{side}x{side}"),
                    "steps": steps, "seed": i, "resolution_binning": false,
                });
                let sent = Instant::now();
                let r = http::request(&addr, "POST", "/v1/images/generations", &[], &body.to_string());
                if r.status == 200 {
                    latencies.lock().unwrap().push(sent.elapsed().as_secs_f64());
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let wall = start.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{} requests ({} failed) from {clients} clients, {side}x{side} px, {steps} steps: {:.2} requests/s; latency \
         p50 {:.3} s, p90 {:.3} s, p99 {:.3} s",
        l.len(),
        failures.load(Ordering::Relaxed),
        l.len() as f64 / wall,
        pct(0.50),
        pct(0.90),
        pct(0.99)
    );
}
