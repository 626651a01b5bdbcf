fn main() -> std::process::ExitCode {
    venued::cli::main()
}
