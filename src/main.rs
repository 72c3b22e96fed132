//! The `switchboard` binary: a thin shell over the library; all argument
//! handling lives in `switchboard::cli`.

fn main() -> std::process::ExitCode {
    switchboard::cli::main()
}
