//! Process CPU, memory and file descriptors, read from `/proc/self` at
//! scrape time (Linux only; elsewhere these metrics are simply absent).

use std::io;
use std::path::Path;

/// `/proc` reports CPU times in clock ticks of `USER_HZ`, which the kernel
/// fixes at 100 for user space on every architecture this runs on (it is
/// independent of the kernel's internal `HZ`).
const USER_HZ: f64 = 100.0;

/// One reading of the process's resources.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time of every thread, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors (sockets included).
    pub open_fds: u64,
    /// Soft limit on open file descriptors, if known.
    pub max_fds: Option<u64>,
    /// OS threads.
    pub threads: u64,
    /// Process start, seconds since the Unix epoch, if known.
    pub start_time_seconds: Option<f64>,
}

/// Errors reading `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// A file could not be read (not Linux, or no `/proc`).
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: &'static str,
        /// Cause.
        source: io::Error,
    },
    /// A file did not have the expected layout.
    #[error("unexpected format of {0}")]
    Format(&'static str),
}

fn read(path: &'static str) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Io { path, source })
}

/// Reads the current process's resources.
///
/// # Errors
/// [`ProcError`] when `/proc/self` is missing or unreadable.
pub fn read_self() -> Result<ProcessStats, ProcError> {
    let stat = parse_stat(&read("/proc/self/stat")?)?;
    let status = read("/proc/self/status")?;
    let resident_bytes = status_kib(&status, "VmRSS:").ok_or(ProcError::Format("/proc/self/status"))? * 1024;
    let virtual_bytes = status_kib(&status, "VmSize:").map_or(stat.vsize, |k| k * 1024);
    let open_fds = count_entries(Path::new("/proc/self/fd"))
        .map_err(|source| ProcError::Io { path: "/proc/self/fd", source })?;
    let max_fds = read("/proc/self/limits").ok().and_then(|l| max_open_files(&l));
    let start_time_seconds = read("/proc/stat")
        .ok()
        .and_then(|s| boot_time(&s))
        .map(|btime| btime as f64 + stat.start_ticks as f64 / USER_HZ);
    Ok(ProcessStats {
        cpu_seconds: (stat.utime + stat.stime) as f64 / USER_HZ,
        resident_bytes,
        virtual_bytes,
        open_fds,
        max_fds,
        threads: stat.threads,
        start_time_seconds,
    })
}

#[derive(Debug, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
    vsize: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may contain spaces
/// and parentheses, so fields are counted from the last `)`.
fn parse_stat(s: &str) -> Result<Stat, ProcError> {
    const E: ProcError = ProcError::Format("/proc/self/stat");
    let rest = &s[s.rfind(')').ok_or(E)? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field n is f[n - 3].
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok()).ok_or(E);
    Ok(Stat {
        utime: field(14)?,
        stime: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
    })
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    // "Max open files  <soft>  <hard>  files"; "unlimited" is not a number.
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

fn boot_time(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// Entries of a directory. Listing `/proc/self/fd` itself holds one
/// descriptor, which is counted like every other client library does.
fn count_entries(dir: &Path) -> io::Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        e?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (ws worker) (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 150 0 0 20 0 7 0 98765 123456789 2048 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s, Stat { utime: 250, stime: 150, threads: 7, start_ticks: 98765, vsize: 123456789 });
        assert!(parse_stat("garbage").is_err());
    }

    #[test]
    fn status_limits_and_boot_time_parse() {
        let status = "Name:\tgateway\nVmSize:\t  204800 kB\nVmRSS:\t   10240 kB\nThreads:\t7\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(10240));
        assert_eq!(status_kib(status, "VmSize:"), Some(204800));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                20000                files\n";
        assert_eq!(max_open_files(limits), Some(20000));
        assert_eq!(max_open_files("Max open files  unlimited unlimited files\n"), None);
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"), Some(1_700_000_000));
    }

    #[test]
    fn counts_directory_entries() {
        let dir = std::env::temp_dir().join(format!("quotecast-fd-count-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..3 {
            std::fs::write(dir.join(i.to_string()), b"x").unwrap();
        }
        assert_eq!(count_entries(&dir).unwrap(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_this_process() {
        // Other tests run in this process at the same time: only check what
        // they cannot change.
        let p = read_self().unwrap();
        assert!(p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes);
        assert!(p.threads >= 1 && p.open_fds >= 3, "{p:?}");
        assert!(p.max_fds.unwrap() >= p.open_fds);
        let start = p.start_time_seconds.unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(start > 1.0e9 && start <= now + 1.0, "start {start} now {now}");
    }
}
