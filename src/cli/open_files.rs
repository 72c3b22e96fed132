//! The process's open-file limit, raised and checked before `serve` opens
//! anything: a configuration that may hold more sockets than the limit
//! allows would otherwise start fine and fail under load, with accept
//! errors (EMFILE) and a stopped listener.

use switchboard::config::Descriptors;

/// Raises the soft open-file limit to the hard one (what an unprivileged
/// process may do) and returns the limit now in force.
#[cfg(unix)]
pub fn raise_to_hard_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write to and read from a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    // rlim_t is u64 on Linux but not on every Unix.
    #[allow(clippy::unnecessary_cast)]
    Ok(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
pub fn raise_to_hard_limit() -> std::io::Result<u64> {
    Ok(u64::MAX)
}

/// Refuses a configuration whose descriptors do not fit in `limit`, saying
/// which numbers add up to how many.
pub fn check(needed: Descriptors, limit: u64) -> anyhow::Result<()> {
    if needed.total() <= limit {
        return Ok(());
    }
    anyhow::bail!(
        "the configuration may hold {} file descriptors but the open-file limit is {limit} \
         (ulimit -n, soft raised to hard): wallet listeners {} (the sum of max_connections, \
         plus one listening socket each), bank connections {}, store {}, reserved {}; \
         lower max_connections or raise the limit",
        needed.total(),
        needed.wallets,
        needed.banks,
        needed.store,
        needed.reserve
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_that_does_not_fit_is_refused_with_its_numbers() {
        let needed = Descriptors {
            wallets: 1025,
            banks: 4,
            store: 8,
            reserve: 64,
        };
        assert!(check(needed, 1101).is_ok());
        let refused = check(needed, 1024).unwrap_err().to_string();
        for part in [
            "1101 file descriptors",
            "limit is 1024",
            "wallet listeners 1025",
            "bank connections 4",
            "store 8",
            "reserved 64",
        ] {
            assert!(refused.contains(part), "{part:?} missing from: {refused}");
        }
    }
}
