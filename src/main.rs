//! The `switchboard` binary: a thin shell over the library; all argument
//! handling lives in `switchboard::cli`.

// Many small short-lived allocations per message (frames, fields, journal
// rows) across threads: mimalloc's thread-local free lists beat glibc's
// malloc here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchboard::cli::main()
}
