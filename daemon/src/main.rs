//! `sibyl`: the oracle daemon. Thin: parse the command line, hand off.

fn main() -> anyhow::Result<()> {
    sibyl::cli::main()
}
