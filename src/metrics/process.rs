//! The broker process as the kernel sees it, read from Linux's `/proc/self` at
//! scrape time (or `$SYS` refresh), never on the hot path. Each function returns
//! `None` where `/proc` is missing or unreadable (not Linux), and the metric is
//! then left out.

/// The kernel's unit for the CPU times in `/proc/PID/stat` (`USER_HZ`). It is part
/// of the user-space ABI and 100 on every architecture Rookery builds for; asking
/// `sysconf(_SC_CLK_TCK)` would take `unsafe`, which the crate forbids.
const USER_HZ: f64 = 100.0;

/// The process's resident memory, from `/proc/self/status` (Linux). mosquitto
/// reports the bytes its own allocator wrapper holds; counting every allocation
/// here would put a shared atomic on the hot path, so the kernel's figure stands in.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}

/// User plus system CPU time of every thread of the process so far, in seconds.
pub fn cpu_seconds() -> Option<f64> {
    cpu_seconds_of(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// `utime + stime` from a `/proc/PID/stat` line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`: utime
/// and stime are fields 14 and 15 of proc(5), the 12th and 13th after it.
fn cpu_seconds_of(stat: &str) -> Option<f64> {
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime.saturating_add(stime) as f64 / USER_HZ)
}

/// File descriptors the process holds open, sockets included (not counting the
/// one this count itself opens to read `/proc/self/fd`).
pub fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some((entries.count() as u64).saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (rook (ery) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(cpu_seconds_of(stat), Some(3.25));
        assert_eq!(cpu_seconds_of("4242 (truncated"), None);
    }

    #[test]
    fn this_process_has_cpu_time_memory_and_open_files() {
        assert!(cpu_seconds().is_some());
        assert!(resident_bytes().is_some_and(|bytes| bytes > 0));
        assert!(open_fds().is_some());
    }
}
