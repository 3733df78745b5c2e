//! [`CpuHogs`]: busy threads that keep the CPU loaded while a test runs, as the other jobs
//! of a CI runner or a busy host do.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// `count` threads of the test process spinning on arithmetic at normal priority (the
/// test's own nice value, the same as the processes it starts), from
/// [`start`](Self::start) until this value is dropped, which stops and joins them.
///
/// On a machine with as many cores as hogs, the brokers and the stages a test starts get
/// about half the CPU time they would get on a quiet one, and wait for it: the timeouts,
/// heartbeats and rebalances of a loaded CI runner, reproduced on purpose. They are
/// threads, not child processes, so nothing outlives the test process, whatever stops it.
///
/// ```no_run
/// let hogs = testkit::CpuHogs::start(2);
/// // ... start the stages, inject the faults, count ...
/// drop(hogs); // the CPU is quiet again
/// ```
#[derive(Debug)]
pub struct CpuHogs {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl CpuHogs {
    /// Starts `count` spinning threads (none for 0: a quiet run).
    ///
    /// Panics if a thread cannot be started.
    pub fn start(count: usize) -> CpuHogs {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let threads = (0..count)
            .map(|index| {
                let (stop, rounds) = (Arc::clone(&stop), Arc::clone(&rounds));
                thread::Builder::new()
                    .name(format!("testkit-cpu-hog-{index}"))
                    .spawn(move || spin(&stop, &rounds))
                    .expect("a CPU hog thread starts")
            })
            .collect();
        CpuHogs {
            stop,
            rounds,
            threads,
        }
    }

    /// How many threads spin.
    pub fn count(&self) -> usize {
        self.threads.len()
    }

    /// Rounds of work done so far by all the threads together (one round is about a
    /// million additions): it grows while they get CPU time.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            // A hog does not panic; if one did, there is nothing to stop any more.
            let _ = thread.join();
        }
    }
}

/// Burns CPU in rounds of about a millisecond until `stop` is set.
fn spin(stop: &AtomicBool, rounds: &AtomicU64) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..1_000_000 {
            // xorshift: work the optimizer cannot remove (black_box) nor vectorize away.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state = std::hint::black_box(state);
        }
        rounds.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hogs_work_until_dropped() {
        let hogs = CpuHogs::start(2);
        assert_eq!(hogs.count(), 2);
        assert!(
            crate::wait_until(Duration::from_secs(10), || hogs.rounds() >= 4),
            "the hogs did no work"
        );
        let names: Vec<_> = hogs
            .threads
            .iter()
            .map(|thread| thread.thread().name().map(str::to_owned))
            .collect();
        assert_eq!(
            names,
            [
                Some("testkit-cpu-hog-0".to_owned()),
                Some("testkit-cpu-hog-1".to_owned())
            ]
        );
        let stop = Arc::clone(&hogs.stop);
        let rounds = Arc::clone(&hogs.rounds);
        drop(hogs); // joins: returns only once every thread has stopped
        assert!(stop.load(Ordering::Relaxed));
        let after = rounds.load(Ordering::Relaxed);
        thread::sleep(Duration::from_millis(100));
        assert_eq!(rounds.load(Ordering::Relaxed), after, "a hog still works");
    }

    #[test]
    fn no_hogs_is_a_quiet_run() {
        let hogs = CpuHogs::start(0);
        assert_eq!(hogs.count(), 0);
        thread::sleep(Duration::from_millis(50));
        assert_eq!(hogs.rounds(), 0);
    }
}
