fn main() -> std::process::ExitCode {
    // ring is the only TLS crypto provider in the tree; make it the process default so
    // nothing can pick another at run time.
    #[cfg(feature = "controller")]
    let _ = rustls::crypto::ring::default_provider().install_default();
    #[cfg(feature = "controller")]
    return venued::cli::main();
    // The agent-only build (Windows PCs): `venued agent ...` and nothing else.
    #[cfg(all(not(feature = "controller"), feature = "agent"))]
    {
        let _ = rustls::crypto::ring::default_provider().install_default();
        venued::agent::cli::main()
    }
    #[cfg(not(any(feature = "controller", feature = "agent")))]
    {
        eprintln!("this venued build has neither controller nor agent; enable a feature");
        std::process::ExitCode::from(2)
    }
}
