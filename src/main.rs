//! The `ringcast` binary: parse the command line, set up logging, run the chosen command.
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = ringcast::cli::Cli::parse();
    ringcast::cli::init_tracing(&cli);
    ringcast::cli::run(cli)
}
