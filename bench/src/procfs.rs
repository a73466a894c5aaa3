//! What the benchmarks read about server processes from `/proc`: CPU time (`utime + stime` of
//! `/proc/<pid>/stat`, per process and per thread), resident memory (`VmRSS` of `/proc/<pid>/status`), open
//! file descriptors (`/proc/<pid>/fd`) and the process tree (to find `wrangler dev`'s two workerd processes).
//!
//! CPU time is in clock ticks (`getconf CLK_TCK`, 100 on Linux), so a delta over a window of `w` seconds has
//! a resolution of 10 ms: windows are ≥ 1 s wherever CPU is reported.

use anyhow::Context;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that fails).
pub fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// The fields of a `stat` line after the `(comm)` field, and the comm itself.
fn stat_fields(text: &str) -> Option<(String, Vec<&str>)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest = text.get(close + 1..)?;
    Some((comm, rest.split_whitespace().collect()))
}

/// `utime + stime` (ticks) and the parent pid from a `stat` line.
fn parse_stat(text: &str) -> Option<(String, u32, u64)> {
    let (comm, f) = stat_fields(text)?;
    // After "(comm)": state(0) ppid(1) ... utime(11) stime(12).
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((comm, ppid, utime + stime))
}

/// CPU time of a whole process (all threads, `utime + stime`), in ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("process {pid} is gone"))?;
    parse_stat(&text).map(|(_, _, t)| t).with_context(|| format!("cannot parse /proc/{pid}/stat"))
}

/// One thread's counters.
#[derive(Clone, Debug, Default)]
pub struct ThreadTicks {
    pub name: String,
    /// `utime + stime`, ticks.
    pub ticks: u64,
    /// Time spent runnable but waiting for a CPU (second field of `/proc/<pid>/task/<tid>/schedstat`), ns:
    /// CPU contention from other threads and processes on the same core.
    pub runq_wait_ns: u64,
}

/// CPU time and run-queue wait of each thread of `pid`, by tid.
pub fn thread_ticks(pid: u32) -> BTreeMap<u32, ThreadTicks> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) {
            if let Some((name, _, ticks)) = parse_stat(&text) {
                let runq_wait_ns = std::fs::read_to_string(entry.path().join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().nth(1).and_then(|w| w.parse().ok()))
                    .unwrap_or(0);
                out.insert(tid, ThreadTicks { name, ticks, runq_wait_ns });
            }
        }
    }
    out
}

/// Resident set size (`VmRSS`) in KiB.
pub fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("process {pid} is gone"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Number of open file descriptors.
pub fn fd_count(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd")).with_context(|| format!("cannot list /proc/{pid}/fd"))?.count())
}

/// The soft limit on open files of `pid` (`Max open files` in `/proc/<pid>/limits`).
pub fn fd_limit(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no 'Max open files' in /proc/{pid}/limits"))
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim().to_owned())
        .unwrap_or_default()
}

/// Every live process: pid → (comm, ppid).
pub fn processes() -> BTreeMap<u32, (String, u32)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) {
            if let Some((comm, ppid, _)) = parse_stat(&text) {
                out.insert(pid, (comm, ppid));
            }
        }
    }
    out
}

/// Per core (`cpuN` lines of `/proc/stat`): (busy ticks, total ticks). Busy is everything but idle and iowait.
pub fn core_ticks() -> Vec<(u64, u64)> {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else { return Vec::new() };
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total.saturating_sub(idle), total)
        })
        .collect()
}

/// The whole machine's (steal ticks, total ticks) from the `cpu` line of `/proc/stat`. Steal is time the
/// hypervisor gave this virtual machine's CPUs to someone else: benchmarks report it, because a window with
/// much of it measures the neighbours.
pub fn steal_ticks() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else { return (0, 0) };
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else { return (0, 0) };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    (v.get(7).copied().unwrap_or(0), v.iter().take(8).sum())
}

/// Sets the CPU affinity of every thread of `pid` (`taskset -a -p -c CPUS PID`).
pub fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    util_linux("taskset", &["-a", "-p", "-c", cpus, &pid.to_string()], "to pin a server process")
}

/// The CPUs this process may run on (`Cpus_allowed_list` of `/proc/self/status`, `taskset -c` syntax).
pub fn own_cpus() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Cpus_allowed_list:"))?;
    line.split(':').nth(1).map(|v| v.trim().to_owned())
}

/// Puts every thread of `pid` in the idle scheduling class (`chrt --idle --all-tasks -p 0 PID`): it then
/// runs only on a CPU that nothing else wants.
pub fn deprioritize(pid: u32) -> anyhow::Result<()> {
    util_linux("chrt", &["--idle", "--all-tasks", "-p", "0", &pid.to_string()], "to deprioritize wrangler's CLI")
}

/// Runs a util-linux tool and fails with its stderr if it fails.
fn util_linux(program: &str, args: &[&str], purpose: &str) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (util-linux) {purpose}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A server process whose resources are reported, under a label (`inner workerd`, `node`, ...).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Watched {
    pub label: String,
    pub pid: u32,
}

/// CPU of the watched processes (and of this process) at one instant.
#[derive(Clone, Debug)]
pub struct CpuSnapshot {
    at: Instant,
    procs: Vec<u64>,
    threads: Vec<BTreeMap<u32, ThreadTicks>>,
    own: u64,
    cores: Vec<(u64, u64)>,
}

/// What one process used over a window.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ProcUsage {
    pub label: String,
    /// CPU time over the window as a share of one core (100 = one core busy; more than 100 is possible only
    /// when the process's threads run on several cores at once).
    pub cpu_pct: f64,
    /// CPU seconds used over the window.
    pub cpu_secs: f64,
    /// The busiest thread's share of one core, and its name.
    pub top_thread_pct: f64,
    pub top_thread: String,
    /// How long the busiest thread waited for a CPU while runnable, as a share of the window: time it could
    /// have run but another thread or process (ours or anyone's) had the core.
    pub top_thread_wait_pct: f64,
    /// Threads that used more than 10 % of a core.
    pub busy_threads: usize,
    /// Resident memory at the end of the window (MiB).
    pub rss_mib: f64,
}

impl CpuSnapshot {
    /// Samples the watched processes and this process.
    pub fn take(watched: &[Watched]) -> CpuSnapshot {
        CpuSnapshot {
            at: Instant::now(),
            procs: watched.iter().map(|w| cpu_ticks(w.pid).unwrap_or(0)).collect(),
            threads: watched.iter().map(|w| thread_ticks(w.pid)).collect(),
            own: cpu_ticks(std::process::id()).unwrap_or(0),
            cores: core_ticks(),
        }
    }

    /// Usage of each watched process between `self` and `later`.
    pub fn usage(&self, later: &CpuSnapshot, watched: &[Watched]) -> Vec<ProcUsage> {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let tck = clk_tck();
        let mut out = Vec::new();
        for (i, w) in watched.iter().enumerate() {
            let before = self.procs.get(i).copied().unwrap_or(0);
            let after = later.procs.get(i).copied().unwrap_or(0);
            let cpu_secs = after.saturating_sub(before) as f64 / tck;
            let mut top = (0.0, String::new(), 0.0);
            let mut busy = 0;
            if let (Some(t0), Some(t1)) = (self.threads.get(i), later.threads.get(i)) {
                for (tid, now) in t1 {
                    let prev = t0.get(tid).cloned().unwrap_or_default();
                    let pct = now.ticks.saturating_sub(prev.ticks) as f64 / tck / secs * 100.0;
                    let wait = now.runq_wait_ns.saturating_sub(prev.runq_wait_ns) as f64 / 1e9 / secs * 100.0;
                    if pct > 10.0 {
                        busy += 1;
                    }
                    if pct > top.0 {
                        top = (pct, now.name.clone(), wait);
                    }
                }
            }
            out.push(ProcUsage {
                label: w.label.clone(),
                cpu_pct: cpu_secs / secs * 100.0,
                cpu_secs,
                top_thread_pct: top.0,
                top_thread: top.1,
                top_thread_wait_pct: top.2,
                busy_threads: busy,
                rss_mib: rss_kb(w.pid).unwrap_or(0) as f64 / 1024.0,
            });
        }
        out
    }

    /// This process's CPU share of one core between `self` and `later`.
    pub fn own_pct(&self, later: &CpuSnapshot) -> f64 {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-3);
        later.own.saturating_sub(self.own) as f64 / clk_tck() / secs * 100.0
    }

    /// How busy each core of the machine was between `self` and `later` (everything on it, not only ours), %.
    pub fn core_busy_pct(&self, later: &CpuSnapshot) -> Vec<f64> {
        self.cores
            .iter()
            .zip(&later.cores)
            .map(|((b0, t0), (b1, t1))| {
                let total = t1.saturating_sub(*t0);
                if total == 0 {
                    0.0
                } else {
                    b1.saturating_sub(*b0) as f64 * 100.0 / total as f64
                }
            })
            .collect()
    }

    /// Total CPU seconds of all watched processes between `self` and `later`.
    pub fn total_secs(&self, later: &CpuSnapshot) -> f64 {
        let ticks: u64 = self.procs.iter().zip(&later.procs).map(|(a, b)| b.saturating_sub(*a)).sum();
        ticks as f64 / clk_tck()
    }
}

/// Waits until the watched processes together use less than `pct` % of a core over a 500 ms window (the
/// server finished its backlog), for at most `limit`. Returns whether they settled.
pub async fn settle(watched: &[Watched], pct: f64, limit: std::time::Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        let a = CpuSnapshot::take(watched);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let b = CpuSnapshot::take(watched);
        let secs = b.at.duration_since(a.at).as_secs_f64();
        if a.total_secs(&b) / secs * 100.0 < pct {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_spaces_in_comm() {
        let line = "123 (a (weird) name) S 1 123 123 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 100 0 0";
        let (comm, ppid, ticks) = parse_stat(line).unwrap_or_default();
        assert_eq!(comm, "a (weird) name");
        assert_eq!(ppid, 1);
        assert_eq!(ticks, 12);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_kb(me).unwrap_or(0) > 0);
        assert!(fd_count(me).unwrap_or(0) > 0);
        assert!(cpu_ticks(me).is_ok());
        assert!(!thread_ticks(me).is_empty());
    }
}
