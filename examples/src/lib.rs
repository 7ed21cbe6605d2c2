//! Shared setup for the runnable programs in `examples/`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Installs a `tracing` subscriber that writes to stderr, filtered by the
/// `RUST_LOG` environment variable (`info` when unset or unreadable).
///
/// `RUST_LOG` takes a default level and per-target levels, as in
/// `RUST_LOG=warn,torsion_protocol=debug`. Stdout is left to the program.
pub fn init_logging() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(filter),
        )
        .try_init();
}

/// The pages of `docs/` and the README, compiled as doctests so that
/// their code cannot drift from the crates (`cargo test -p
/// torsion-examples --doc`). Only built by rustdoc's test runner.
#[cfg(doctest)]
pub mod pages {
    /// `README.md`.
    #[doc = include_str!("../../README.md")]
    pub struct Readme;
    /// `docs/README.md`.
    #[doc = include_str!("../../docs/README.md")]
    pub struct DocsIndex;
    /// `docs/reactor.md`.
    #[doc = include_str!("../../docs/reactor.md")]
    pub struct ReactorPage;
    /// `docs/transport.md`.
    #[doc = include_str!("../../docs/transport.md")]
    pub struct TransportPage;
    /// `docs/protocol.md`.
    #[doc = include_str!("../../docs/protocol.md")]
    pub struct ProtocolPage;
    /// `docs/echo.md`.
    #[doc = include_str!("../../docs/echo.md")]
    pub struct EchoPage;
    /// `docs/async.md`.
    #[doc = include_str!("../../docs/async.md")]
    pub struct AsyncPage;
    /// `docs/performance.md`.
    #[doc = include_str!("../../docs/performance.md")]
    pub struct PerformancePage;
    /// `docs/process.md`.
    #[doc = include_str!("../../docs/process.md")]
    pub struct ProcessPage;
    /// `docs/serial.md`.
    #[doc = include_str!("../../docs/serial.md")]
    pub struct SerialPage;
    /// `docs/filesystem.md`.
    #[doc = include_str!("../../docs/filesystem.md")]
    pub struct FilesystemPage;
    /// `docs/reliability.md`.
    #[doc = include_str!("../../docs/reliability.md")]
    pub struct ReliabilityPage;
    /// `docs/tls.md`.
    #[doc = include_str!("../../docs/tls.md")]
    pub struct TlsPage;
    /// `docs/from-twisted.md`.
    #[doc = include_str!("../../docs/from-twisted.md")]
    pub struct FromTwistedPage;
    /// `docs/from-tokio.md`.
    #[doc = include_str!("../../docs/from-tokio.md")]
    pub struct FromTokioPage;
    /// `docs/features.md`.
    #[doc = include_str!("../../docs/features.md")]
    pub struct FeaturesPage;
    /// `docs/observability.md`.
    #[doc = include_str!("../../docs/observability.md")]
    pub struct ObservabilityPage;
}
