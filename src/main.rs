use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    katop::run(&katop::cli::Args::parse())
}
