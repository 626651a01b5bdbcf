//! The tokio runtime the command-line entry points run on.

/// A runtime with timers and I/O, or None after saying why on stderr.
pub fn build(builder: &mut tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .inspect_err(|e| eprintln!("error: cannot start the async runtime: {e}"))
        .ok()
}

/// Sleep until `at`, or forever when there is nothing to wait for (a `select!` branch
/// that only fires when a deadline exists).
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
