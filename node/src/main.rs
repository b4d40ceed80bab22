//! The `kith` binary: see `kith --help`.

fn main() -> std::process::ExitCode {
    kith_node::cli::main()
}
