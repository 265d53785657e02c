//! Server processes: CPU and memory from /proc, and child processes killed when dropped.

use anyhow::{Context, Result, anyhow};
use std::path::Path;
use std::process::{Child, Command};

pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// (ppid, utime + stime) from /proc/PID/stat.
pub fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

pub fn status_kib(path: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[derive(Clone)]
pub struct ProcWatch {
    pub pid: u32,
    /// PostgreSQL: the postmaster and all its children, memory as the sum of PSS.
    pub group: bool,
}

impl ProcWatch {
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.pid];
        if self.group
            && let Ok(dir) = std::fs::read_dir("/proc")
        {
            for e in dir.flatten() {
                if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                    && proc_stat(pid).is_some_and(|(ppid, _)| ppid == self.pid)
                {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    pub fn cpu_ticks(&self) -> u64 {
        self.pids()
            .into_iter()
            .filter_map(|p| proc_stat(p).map(|(_, t)| t))
            .sum()
    }

    pub fn mem_bytes(&self) -> u64 {
        if self.group {
            self.pids()
                .into_iter()
                .filter_map(|p| status_kib(&format!("/proc/{p}/smaps_rollup"), "Pss:"))
                .sum::<u64>()
                * 1024
        } else {
            status_kib(&format!("/proc/{}/status", self.pid), "VmRSS:").unwrap_or(0) * 1024
        }
    }
}

pub fn pid_from_file(path: &Path) -> Result<u32> {
    let s = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    s.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| anyhow!("no pid in {}", path.display()))
}

/// A child process that is killed when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
