//! What the operating system tells about this process: the open-file
//! limit, CPU time per process and per thread (from `/proc`), and a
//! process's resident memory.

use serde::Serialize;
use std::io;

/// File descriptors kept free for everything that is not a client
/// connection (runtime, feed socket, stdio, the JSON file, ...).
pub const FD_RESERVE: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new
/// soft limit. Thousands of connections need thousands of descriptors and
/// the default soft limit is often 1024.
///
/// # Errors
/// When the limit cannot be set.
pub fn raise_nofile() -> io::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let cur = getrlimit(Resource::Nofile);
    // `None` is "unlimited"; the kernel still caps at fs.nr_open.
    let target = cur.maximum.unwrap_or(1 << 20);
    if cur.current.is_some_and(|c| c >= target) {
        return Ok(target);
    }
    setrlimit(Resource::Nofile, Rlimit { current: Some(target), maximum: cur.maximum })
        .map_err(io::Error::from)?;
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(target))
}

/// The kernel thread id of the calling thread, to read its CPU time later.
pub fn thread_id() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// User + system CPU seconds of a `/proc/.../stat` file.
fn stat_cpu_secs(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_stat_cpu(&text).map(|ticks| ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// utime + stime (clock ticks) of a `stat` line. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after the last
/// `)`: state is field 3, utime field 14, stime field 15.
pub fn parse_stat_cpu(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds used so far by this whole process.
pub fn process_cpu_secs() -> Option<f64> {
    stat_cpu_secs("/proc/self/stat")
}

/// CPU seconds used so far by the given threads of this process.
pub fn threads_cpu_secs(tids: &[i32]) -> Option<f64> {
    let mut sum = 0.0;
    for t in tids {
        sum += stat_cpu_secs(&format!("/proc/self/task/{t}/stat"))?;
    }
    Some(sum)
}

/// CPU seconds used so far by process `pid`.
pub fn pid_cpu_secs(pid: u32) -> Option<f64> {
    stat_cpu_secs(&format!("/proc/{pid}/stat"))
}

/// Resident set size of process `pid` in bytes (`VmRSS`).
pub fn pid_rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `(busy, total)` jiffies of the whole machine from `/proc/stat`'s first
/// line (idle and iowait count as not busy).
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    if v.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v[4];
    Some((total - idle, total))
}

fn machine_jiffies() -> Option<(u64, u64)> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// CPU used over a measurement window, in cores (1.0 = one core busy).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct CpuUse {
    /// The client threads (connections, decoding, checks).
    pub clients_cores: f64,
    /// The whole loadtest process (clients, progress, in-process feed).
    pub process_cores: f64,
    /// Cores of this machine.
    pub machine_cores: usize,
    /// `process_cores / machine_cores`.
    pub process_share: f64,
    /// The gateway (with `--gateway-pid`), cores.
    pub gateway_cores: Option<f64>,
    /// Share of the whole machine's CPU that was busy (every process):
    /// near 1.0 the results are CPU-bound, whoever used it.
    pub machine_busy: f64,
}

/// CPU counters at one instant, to subtract later.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: std::time::Instant,
    clients: f64,
    process: f64,
    gateway: Option<f64>,
    machine: Option<(u64, u64)>,
}

impl CpuSample {
    /// Reads the counters now.
    pub fn take(client_tids: &[i32], gateway_pid: Option<u32>) -> CpuSample {
        CpuSample {
            at: std::time::Instant::now(),
            clients: threads_cpu_secs(client_tids).unwrap_or(0.0),
            process: process_cpu_secs().unwrap_or(0.0),
            gateway: gateway_pid.and_then(pid_cpu_secs),
            machine: machine_jiffies(),
        }
    }

    /// CPU used between `self` and `later`.
    pub fn until(&self, later: &CpuSample) -> CpuUse {
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let machine_cores = cores();
        let process_cores = (later.process - self.process) / wall;
        CpuUse {
            clients_cores: (later.clients - self.clients) / wall,
            process_cores,
            machine_cores,
            process_share: process_cores / machine_cores as f64,
            gateway_cores: match (self.gateway, later.gateway) {
                (Some(a), Some(b)) => Some((b - a) / wall),
                _ => None,
            },
            machine_busy: match (self.machine, later.machine) {
                (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
                _ => 0.0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a ')' must not shift the fields.
        let line = "1234 (a b) c) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 4 0 100 200 300";
        assert_eq!(parse_stat_cpu(line), Some(175));
        assert_eq!(parse_stat_cpu("garbage"), None);
        assert_eq!(parse_stat_cpu("1 (x) S 1 2"), None);
    }

    #[test]
    fn machine_busy_share_from_proc_stat() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5\n";
        assert_eq!(parse_proc_stat(text), Some((150, 1000)));
        assert_eq!(parse_proc_stat("intr 1 2 3"), None);
        let a = CpuSample { machine: Some((100, 1000)), ..CpuSample::take(&[], None) };
        let b = CpuSample { machine: Some((550, 1500)), ..a };
        assert!((a.until(&b).machine_busy - 0.9).abs() < 1e-9);
    }

    #[test]
    fn own_process_is_readable() {
        assert!(process_cpu_secs().is_some());
        assert!(threads_cpu_secs(&[thread_id()]).is_some());
        assert!(pid_rss_bytes(std::process::id()).unwrap() > 0);
        assert!(raise_nofile().unwrap() >= 256);
    }
}
