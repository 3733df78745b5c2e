//! One shutdown signal for the whole process: SIGTERM, SIGINT, or a call to `trigger`.

use tokio_util::sync::CancellationToken;

/// A cloneable handle that every task watches to stop gracefully.
///
/// All clones share one state: triggering any of them triggers all.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A handle that only a call to [`Shutdown::trigger`] fires.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle fired by SIGTERM (Kubernetes stopping a pod) or SIGINT (Ctrl-C), as well
    /// as by [`Shutdown::trigger`].
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (it spawns the task that waits for signals).
    pub fn on_signals() -> Self {
        let shutdown = Self::new();
        let trigger = shutdown.clone();
        // Listeners are installed before returning, so no signal is missed in between.
        let signals = Signals::install();
        tokio::spawn(async move {
            tokio::select! {
                signal = signals.recv() => {
                    tracing::info!(signal, "Received a signal, shutting down.");
                    trigger.trigger();
                }
                () = trigger.triggered() => {}
            }
        });
        shutdown
    }

    /// Asks everything watching this handle to stop.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown was asked for.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once shutdown is asked for (at once if it already was).
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }

    /// The underlying token, for APIs that take one.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }
}

/// The signals that stop the process.
struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};

        let install = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, signal = name, "Cannot listen for a signal.");
                None
            }
        };
        Self {
            terminate: install(SignalKind::terminate(), "SIGTERM"),
            interrupt: install(SignalKind::interrupt(), "SIGINT"),
        }
    }

    #[cfg(not(unix))]
    fn install() -> Self {
        Self {}
    }

    /// Completes with the signal's name; never completes when no listener could be
    /// installed (only a programmatic trigger can stop the process then).
    #[cfg(unix)]
    async fn recv(mut self) -> &'static str {
        async fn next(listener: &mut Option<tokio::signal::unix::Signal>) {
            match listener {
                Some(listener) => {
                    listener.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = next(&mut self.terminate) => "SIGTERM",
            () = next(&mut self.interrupt) => "SIGINT",
        }
    }

    #[cfg(not(unix))]
    async fn recv(self) -> &'static str {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(error) => {
                tracing::warn!(%error, "Cannot listen for Ctrl-C.");
                std::future::pending().await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_reaches_every_clone() {
        let shutdown = Shutdown::new();
        let watcher = shutdown.clone();
        assert!(!watcher.is_triggered());
        let waiting = tokio::spawn(async move { watcher.triggered().await });
        shutdown.trigger();
        waiting.await.unwrap();
        assert!(shutdown.is_triggered());
        // Already triggered: completes at once.
        shutdown.triggered().await;
    }

    #[tokio::test]
    async fn on_signals_can_also_be_triggered_by_hand() {
        let shutdown = Shutdown::on_signals();
        shutdown.trigger();
        shutdown.triggered().await;
        assert!(shutdown.token().is_cancelled());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sigterm_triggers_shutdown() {
        let shutdown = Shutdown::on_signals();
        // tokio's handler now owns SIGTERM for this process: it no longer kills it.
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("`kill` runs");
        assert!(status.success());
        tokio::time::timeout(std::time::Duration::from_secs(5), shutdown.triggered())
            .await
            .expect("SIGTERM triggers shutdown");
    }
}
