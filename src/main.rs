//! The `syncgate` binary: parse the command line, then call the library
//! (`cli` carries out each subcommand; `cli::allocator` is the binary's
//! allocator).

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    cli::allocator::tune();
    cli::run(cli::Cli::parse())
}
