//! Transparent huge pages turned off for the process.
//!
//! mimalloc asks the kernel for transparent huge pages on its arenas
//! (`madvise(MADV_HUGEPAGE)`), and a kernel whose THP `defrag` setting is
//! `madvise` (a common default) then finds, compacts and zeroes a whole
//! 2 MiB page, synchronously, on the first touch of each. Under a sudden
//! load the switch touches tens of MiB within a fraction of a second: on a
//! virtual machine that stalled every request for 50–120 ms in the first
//! second of most load runs, and again when freed memory was handed back
//! and touched anew (benches/RESULTS.md, "The first second's stall: huge
//! pages"). A payment switch wants a steady latency more than the few per
//! cent of TLB misses huge pages save, as databases that advise turning THP
//! off do; this asks for it per process, leaving the system's setting alone.

/// Asks the kernel never to back this process's memory with transparent
/// huge pages (`prctl(PR_SET_THP_DISABLE)`, Linux 3.15 and later; inherited
/// by children). Called first thing by every binary; elsewhere it does
/// nothing.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no
        // memory of this process's; it only sets a flag on its address space.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn the_process_is_marked_to_have_no_huge_pages() {
        super::disable_transparent_huge_pages().unwrap();
        // SAFETY: PR_GET_THP_DISABLE reads the flag and takes no pointers.
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(flag, 1);
    }
}
