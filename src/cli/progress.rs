//! Progress bars of the long commands (`clear`, `capture decode`, `capture
//! replay`, `conform`): drawn on stderr only when it is a terminal, so
//! that a file, a pipe or a CI log never gets their escape sequences.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `len` steps drawn with `template` (indicatif's) when stderr is
/// a terminal and `wanted`; a hidden one, that draws nothing, otherwise.
pub fn bar(len: u64, template: &str, wanted: bool) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
    // Drawn at once, not only at the first step: a slow first step (a
    // store to open, a first case) shows the command has started.
    bar.tick();
    bar
}
