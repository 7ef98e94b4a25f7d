//! What the server costs, read from /proc: resident memory (`VmRSS` of
//! `/proc/<pid>/status`) and CPU time (`utime + stime` of `/proc/<pid>/stat`).

use std::sync::OnceLock;

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
pub fn parse_vmrss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `utime + stime` in clock ticks from the text of `/proc/<pid>/stat`. The command name
/// (field 2) is in parentheses and may hold spaces and parentheses, so fields are counted
/// from the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After ")" come state (field 3), ..., utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when that cannot be run).
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// The resident set of `pid` in KiB, `None` when it cannot be read.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .as_deref()
        .and_then(parse_vmrss_kib)
}

/// The summed resident set of `pids` in KiB (`None` when any cannot be read, or none
/// were given).
pub fn rss_kib_sum(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| rss_kib(p)).sum()
}

/// CPU seconds (user + system) used so far by `pid`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_cpu_ticks(&stat)?;
    Some(ticks as f64 / clock_ticks() as f64)
}

/// The summed CPU seconds of `pids` (`None` when any cannot be read, or none were given).
pub fn cpu_seconds_sum(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}

/// This process's own CPU seconds (the load generator's cost, to tell whether it was
/// the bottleneck).
pub fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds(std::process::id())
}

/// The machine's CPU time from the first (`cpu`) line of `/proc/stat`: (busy, total) in
/// clock ticks over all cores, busy being everything but `idle` and `iowait`.
pub fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user and nice).
    if ticks.len() < 8 {
        return None;
    }
    let total: u64 = ticks[..8].iter().sum();
    let idle = ticks[3] + ticks[4];
    Some((total - idle, total))
}

/// The machine's (busy, total) CPU ticks so far.
pub fn machine_ticks() -> Option<(u64, u64)> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// How busy the whole machine was between two [`machine_ticks`] readings, in percent of
/// all its cores: the load a run's latencies were measured under, everything on the
/// machine included.
pub fn busy_percent(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let busy = after.0.checked_sub(before.0)?;
    let total = after.1.checked_sub(before.1)?;
    (total > 0).then(|| busy as f64 / total as f64 * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_s_load_is_read_from_proc_stat() {
        let stat = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\nintr 1\n";
        assert_eq!(parse_machine_ticks(stat), Some((160, 980)));
        assert_eq!(parse_machine_ticks("cpu  1 2 3\n"), None);
        assert_eq!(parse_machine_ticks("intr 1\n"), None);
        assert_eq!(busy_percent((160, 980), (260, 1180)), Some(50.0));
        assert_eq!(busy_percent((160, 980), (160, 980)), None);
        assert!(machine_ticks().is_some_and(|(b, t)| b <= t));
    }

    #[test]
    fn vmrss_is_read_from_status() {
        let status = "Name:\tp2piano\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_vmrss_kib(status), Some(12345));
        assert_eq!(parse_vmrss_kib("Name:\tx\n"), None);
        assert_eq!(parse_vmrss_kib("VmRSS:\t garbage kB\n"), None);
    }

    #[test]
    fn cpu_ticks_are_counted_past_the_command_name() {
        // A command name with spaces and parentheses.
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 75 0 0 20 0 8 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("1 (x) S 1 2"), None);
        assert_eq!(parse_cpu_ticks("no parens"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(rss_kib(me).is_some_and(|k| k > 0));
        assert!(cpu_seconds(me).is_some());
        assert!(own_cpu_seconds().is_some());
        assert!(rss_kib_sum(&[me, me]).is_some());
        assert!(cpu_seconds_sum(&[me]).is_some());
        assert_eq!(rss_kib_sum(&[]), None);
        assert!(clock_ticks() > 0);
    }
}
