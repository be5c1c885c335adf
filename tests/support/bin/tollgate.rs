//! The real `tollgate` CLI, built in the test package so tests can spawn it.

fn main() -> std::process::ExitCode {
    tollgate::cli::main()
}
