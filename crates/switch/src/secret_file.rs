//! Files that hold keys: readable by their owner only, read into memory that
//! is wiped when dropped.

use std::path::Path;

use zeroize::Zeroizing;

/// The text of a key file, refused when its mode lets anyone but its owner
/// read it. The error names the file and the reason, never its contents.
pub fn read(path: &Path) -> Result<Zeroizing<String>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{}: mode {mode:04o} lets others read the keys; chmod 600 it",
                path.display()
            ));
        }
    }
    let _ = meta;
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The key a key file or environment variable holds: its hex digits, with
/// `#` comments and white space left out.
pub fn hex_digits(text: &str) -> Zeroizing<String> {
    let mut digits = Zeroizing::new(String::with_capacity(text.len()));
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        digits.extend(line.chars().filter(|c| !c.is_whitespace()));
    }
    digits
}
