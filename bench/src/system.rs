//! What the load generator needs from the operating system: a file limit high enough for its
//! connections, and the RSS and CPU time of the server processes it measures (from `/proc`).

use std::path::PathBuf;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use serde::Serialize;

use crate::error::BenchError;

/// The open-file limit after [`raise_file_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileLimit {
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit (the most an unprivileged process may raise the soft limit to).
    pub hard: u64,
    /// Whether the soft limit was raised.
    pub raised: bool,
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit, so it can hold as many
/// connections as the system allows. Returns the limits in force afterwards.
///
/// # Errors
/// [`BenchError::Config`] when the limits cannot be read or set.
pub fn raise_file_limit() -> Result<FileLimit, BenchError> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| BenchError::Config(format!("reading RLIMIT_NOFILE: {e}")))?;
    if soft >= hard {
        return Ok(FileLimit { soft, hard, raised: false });
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        .map_err(|e| BenchError::Config(format!("raising RLIMIT_NOFILE to {hard}: {e}")))?;
    Ok(FileLimit { soft: hard, hard, raised: true })
}

/// File descriptors the load generator keeps for itself beyond one per connection (stdio,
/// the runtime's epoll and eventfds, files it reads).
pub const RESERVED_FDS: u64 = 64;

/// A sample of a process's resource use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcSample {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Bytes the process caused to be written to storage (`write_bytes` of `/proc/PID/io`:
    /// page-cache pages it dirtied, counted once until written back), if readable.
    pub write_bytes: Option<u64>,
}

/// Reads RSS and CPU time of processes from `/proc`.
#[derive(Debug, Clone)]
pub struct ProcWatch {
    pids: Vec<u32>,
    ticks_per_second: u64,
}

impl ProcWatch {
    /// Watches `pids` (their figures are added up, e.g. two federated nodes).
    pub fn new(pids: Vec<u32>) -> Self {
        let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|t| u64::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(100);
        Self { pids, ticks_per_second }
    }

    /// Whether there is anything to watch.
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }

    /// The watched pids.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// The sum over the watched processes, now.
    ///
    /// # Errors
    /// [`BenchError::Io`] when a process's `/proc` files cannot be read (it has exited).
    pub fn sample(&self) -> Result<ProcSample, BenchError> {
        let mut total = ProcSample { write_bytes: Some(0), ..ProcSample::default() };
        for pid in &self.pids {
            let one = sample_pid(*pid)?;
            total.rss_bytes += one.rss_bytes;
            total.cpu_ticks += one.cpu_ticks;
            // A sum only if every process's figure could be read.
            total.write_bytes = total.write_bytes.zip(one.write_bytes).map(|(sum, bytes)| sum + bytes);
        }
        Ok(total)
    }

    /// Clock ticks as seconds.
    pub fn seconds(&self, ticks: u64) -> f64 {
        ticks as f64 / self.ticks_per_second as f64
    }
}

fn sample_pid(pid: u32) -> Result<ProcSample, BenchError> {
    let status_path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = std::fs::read_to_string(&status_path).map_err(BenchError::io(&status_path))?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .unwrap_or(0);
    let stat_path = PathBuf::from(format!("/proc/{pid}/stat"));
    let stat = std::fs::read_to_string(&stat_path).map_err(BenchError::io(&stat_path))?;
    let write_bytes = std::fs::read_to_string(format!("/proc/{pid}/io")).ok().and_then(|io| parse_write_bytes(&io));
    Ok(ProcSample { rss_bytes: rss_kib * 1024, cpu_ticks: parse_cpu_ticks(&stat).unwrap_or(0), write_bytes })
}

/// `write_bytes` from a `/proc/PID/io` file.
fn parse_write_bytes(io: &str) -> Option<u64> {
    io.lines().find_map(|line| line.strip_prefix("write_bytes:"))?.trim().parse().ok()
}

/// `utime + stime` from a `/proc/PID/stat` line (fields 14 and 15; the command name, field 2,
/// is in parentheses and may hold spaces, so fields are counted after its closing one).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The 1-minute load average, for the record beside the figures.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_bytes_are_read_from_their_own_line() {
        let io = "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 81920\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_write_bytes(io), Some(81920));
        assert_eq!(parse_write_bytes("rchar: 10\n"), None);
    }

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces() {
        let stat = "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn this_process_can_be_sampled() {
        let watch = ProcWatch::new(vec![std::process::id()]);
        let sample = watch.sample().unwrap();
        assert!(sample.rss_bytes > 0);
    }
}
