//! Time per (app, mode): real time for live mode, real time plus the app's offset for test mode.

use crate::engine::{Mode, Ts};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Default)]
pub struct AppClock {
    test_offset_ms: AtomicI64,
}

pub fn real_now() -> Ts {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Ts(i64::try_from(ms).unwrap_or(i64::MAX))
}

impl AppClock {
    pub fn new(test_offset_ms: i64) -> AppClock {
        AppClock {
            test_offset_ms: AtomicI64::new(test_offset_ms),
        }
    }

    pub fn now(&self, mode: Mode) -> Ts {
        match mode {
            Mode::Live => real_now(),
            Mode::Test => real_now().plus_ms(self.test_offset_ms()),
        }
    }

    pub fn test_offset_ms(&self) -> i64 {
        self.test_offset_ms.load(Ordering::Acquire)
    }

    pub fn set_test_offset_ms(&self, offset_ms: i64) {
        self.test_offset_ms.store(offset_ms, Ordering::Release);
    }
}
