//! The `kith` binary: see `kith --help`.

/// mimalloc rather than glibc's malloc: a message is allocated on a tokio worker and freed on
/// the store's writer thread (and the other way round), which glibc's arenas make expensive.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kith_node::cli::main()
}
