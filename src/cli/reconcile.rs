//! `switchboard reconcile --ours FILE --theirs FILE [--json]`: a participant's
//! own records against the switch's clearing file for it and the same day.
//! Exit status 0 when they agree, 1 when anything differs, 2 on errors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use switchboard::clearing::reconcile::reconcile;
use switchboard::clearing::ParticipantFile;

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    /// The participant's own record file (same format as the switch's).
    #[arg(long)]
    ours: PathBuf,
    /// The switch's clearing file for that participant and date.
    #[arg(long)]
    theirs: PathBuf,
    /// One JSON object: counts and every difference.
    #[arg(long)]
    json: bool,
}

fn read(path: &Path) -> anyhow::Result<ParticipantFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    ParticipantFile::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub fn run(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let ours = read(&args.ours)?;
    let theirs = read(&args.theirs)?;
    let result = reconcile(&ours, &theirs)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", result.report());
    }
    Ok(if result.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
