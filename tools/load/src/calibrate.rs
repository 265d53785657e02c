//! Calibration: fdatasync latency of 4 KiB writes in the directory that holds the data, so a run
//! says how fast its disk was.

use crate::new_hist;
use anyhow::{Context, Result};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Calibration {
    dir: PathBuf,
    overwrite: bool,
    count: u64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Calibration {
    pub fn line(&self) -> String {
        format!(
            "fdatasync of 4 KiB {} in {}: {} writes, p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            if self.overwrite {
                "overwrites of a preallocated file"
            } else {
                "appends"
            },
            self.dir.display(),
            self.count,
            self.p50,
            self.p99,
            self.p999,
            self.max
        )
    }
}

/// fdatasync latency of 4 KiB writes: appends (each also commits the file's new size, as a log
/// that grows does) or overwrites of a preallocated, already synced file (data only).
pub fn fsync_calibration(dir: &Path, secs: f64, overwrite: bool) -> Result<Calibration> {
    use std::io::{Seek, SeekFrom};
    let path = dir.join(format!("fsync-calibration-{}", std::process::id()));
    let mut file = std::fs::File::create(&path).with_context(|| format!("{}", path.display()))?;
    let block = [0x5au8; 4096];
    const SLOTS: u64 = 1024;
    if overwrite {
        for _ in 0..SLOTS {
            file.write_all(&block)?;
        }
        file.sync_all()?;
    }
    let mut hist = new_hist();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end && hist.len() < 20_000 {
        if overwrite {
            file.seek(SeekFrom::Start((hist.len() % SLOTS) * 4096))?;
        }
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        hist.saturating_record(t.elapsed().as_micros() as u64);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(Calibration {
        dir: dir.to_path_buf(),
        overwrite,
        count: hist.len(),
        p50: hist.value_at_quantile(0.5),
        p99: hist.value_at_quantile(0.99),
        p999: hist.value_at_quantile(0.999),
        max: hist.max(),
    })
}
