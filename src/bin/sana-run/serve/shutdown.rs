//! Graceful shutdown: on SIGTERM (or Ctrl-C) the service stops accepting, reports itself unready, lets queued and
//! in-flight requests finish within `--shutdown-deadline`, cancels what is left after it, and exits 0.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::log;
use super::worker::JobError;
use super::App;

/// How long the cancelled requests get to be answered after the deadline.
const AFTER_DEADLINE: Duration = Duration::from_secs(10);

/// Resolves on SIGTERM or SIGINT.
pub async fn requested() {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::event(
                "signal_handler_failed",
                serde_json::json!({ "error": e.to_string() }),
            );
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Drains the service: `stop_accepting` tells the HTTP server to close its listener and wait for its connections;
/// `server` is that server's task.
pub async fn drain(
    app: &App,
    stop_accepting: &Notify,
    mut server: JoinHandle<std::io::Result<()>>,
    deadline: Duration,
) {
    log::event(
        "shutdown",
        serde_json::json!({ "queued": app.queue.depth(), "deadline_s": deadline.as_secs_f64() }),
    );
    app.draining.store(true, Ordering::Relaxed);
    app.queue.close();
    stop_accepting.notify_one();
    if tokio::time::timeout(deadline, &mut server).await.is_ok() {
        return;
    }
    log::event(
        "shutdown_deadline",
        serde_json::json!({ "cancelled_queued": app.queue.depth() }),
    );
    app.abort.store(true, Ordering::Relaxed);
    for job in app.queue.drain() {
        let _ = job.reply.send(Err(JobError::Aborted));
    }
    let _ = tokio::time::timeout(AFTER_DEADLINE, server).await;
}

/// Resolves when `notify` is notified (an owned future, as axum's `with_graceful_shutdown` takes).
pub async fn when_notified(notify: Arc<Notify>) {
    notify.notified().await;
}
