//! The `switchboard` binary: the command line over the switch
//! (`switchboard`), the codec (`iso8583`) and the simulators. Only this
//! package knows about clap and the terminal.

mod cli;

// Many small short-lived allocations per message (frames, fields, journal
// rows) across threads: mimalloc's thread-local free lists beat glibc's
// malloc here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Before the load arrives: no stall on a huge page's first touch. On a
    // kernel without the setting nothing is lost but that.
    let _ = switchboard::huge_pages::disable_transparent_huge_pages();
    cli::main()
}
