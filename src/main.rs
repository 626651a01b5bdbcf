fn main() -> std::process::ExitCode {
    // ring is the only TLS crypto provider in the tree; make it the process default so
    // nothing can pick another at run time.
    #[cfg(feature = "controller")]
    let _ = rustls::crypto::ring::default_provider().install_default();
    #[cfg(feature = "controller")]
    return venued::cli::main();
    // The agent-only build (Windows PCs) gets its own entry point with the agent issue.
    #[cfg(not(feature = "controller"))]
    {
        eprintln!("this venued build has no controller; rebuild with --features controller");
        std::process::ExitCode::from(2)
    }
}
