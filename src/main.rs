use std::process::ExitCode;

fn main() -> ExitCode {
    katop::main()
}
