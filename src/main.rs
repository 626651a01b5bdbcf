fn main() -> std::process::ExitCode {
    #[cfg(feature = "controller")]
    return venued::cli::main();
    // The agent-only build (Windows PCs) gets its own entry point with the agent issue.
    #[cfg(not(feature = "controller"))]
    {
        eprintln!("this venued build has no controller; rebuild with --features controller");
        std::process::ExitCode::from(2)
    }
}
