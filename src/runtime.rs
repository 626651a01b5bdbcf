//! The tokio runtime the command-line entry points run on.

/// A runtime with timers and I/O, or None after saying why on stderr.
pub fn build(builder: &mut tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .inspect_err(|e| eprintln!("error: cannot start the async runtime: {e}"))
        .ok()
}
