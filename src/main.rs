fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(leaderrun::cli::main(std::env::args_os()))
}
