//! A team of threads held for one encoder pass, so that its thirty-odd parallel regions hand
//! tasks to threads that are already spinning instead of waking sleeping ones.
//!
//! Why: rayon parks idle workers, and the engine thread that calls the kernels is not one of
//! them, so every `par_iter` woke a worker and then put the caller to sleep until it finished.
//! At one short text a batch-1 profile spent about a quarter of the time in the kernel's wake-up
//! path (`try_to_wake_up`), more than all the attention and GELU work together. Inside a team
//! the caller leads: it publishes each region's tasks, takes tasks itself, and spins until the
//! followers (rayon workers borrowed for the pass) finish theirs. Outside a team `parallel_for`
//! is plain rayon.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// The claim word: region number (24 bits) | tasks in the region (20) | next unclaimed (20).
const FIELD_BITS: u32 = 20;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;
const EPOCH_MASK: u64 = (1 << 24) - 1;
/// Regions with more tasks than a claim word holds go to rayon.
const MAX_TEAM_TASKS: usize = FIELD_MASK as usize;
/// Busy-wait rounds before a waiting follower starts yielding its core to other processes.
const SPINS_BEFORE_YIELD: u32 = 1 << 14;

type Job = *const (dyn Fn(usize) + Sync);

struct Team {
    claim: AtomicU64,
    /// Tasks of the current region that have run (or panicked).
    done: AtomicUsize,
    /// The current region's task, its lifetime erased. Written by the leader only between
    /// regions, when every claimed task has finished; read by a thread only after it claimed a
    /// task of the region, which keeps the region (and the closure) alive.
    job: UnsafeCell<Option<Job>>,
    /// The first panic of the region, re-raised on the leader once every task has finished.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    finished: AtomicBool,
}

// SAFETY: `job` is only written while no other thread may read it (see the field).
unsafe impl Sync for Team {}

thread_local! {
    /// The team the current thread leads, if any.
    static LEADING: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
}

fn unpack(claim: u64) -> (u64, usize, usize) {
    (claim >> (2 * FIELD_BITS), ((claim >> FIELD_BITS) & FIELD_MASK) as usize, (claim & FIELD_MASK) as usize)
}

fn pack(epoch: u64, tasks: usize, next: usize) -> u64 {
    (epoch << (2 * FIELD_BITS)) | ((tasks as u64) << FIELD_BITS) | next as u64
}

impl Team {
    fn new() -> Self {
        Self {
            claim: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            panic: Mutex::new(None),
            finished: AtomicBool::new(false),
        }
    }

    /// Runs one region on the leader: publishes it, works on it, waits for the last task.
    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        // SAFETY (lifetime erasure): the closure outlives the region, because this function
        // returns only after every claimed task has finished, panics included.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(task) };
        // SAFETY: every task of the last region finished, so no thread reads `job` now.
        unsafe { *self.job.get() = Some(job) };
        self.done.store(0, Ordering::Relaxed);
        let epoch = (unpack(self.claim.load(Ordering::Relaxed)).0 + 1) & EPOCH_MASK;
        self.claim.store(pack(epoch, tasks, 0), Ordering::Release);
        self.work(epoch);
        while self.done.load(Ordering::Acquire) < tasks {
            std::hint::spin_loop();
        }
        if let Some(payload) = self.panic.lock().unwrap_or_else(|e| e.into_inner()).take() {
            resume_unwind(payload);
        }
    }

    /// Claims and runs tasks of region `epoch` until none is left.
    fn work(&self, epoch: u64) {
        loop {
            let claim = self.claim.load(Ordering::Acquire);
            let (current, tasks, next) = unpack(claim);
            if current != epoch || next >= tasks {
                return;
            }
            if self.claim.compare_exchange_weak(claim, claim + 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
                continue;
            }
            // SAFETY: this thread holds an unfinished task of the region, so the leader is still
            // inside `run` and `job` is the region's closure.
            let job = unsafe { (*self.job.get()).expect("a published region has a job") };
            // SAFETY: as above, the closure is alive until `done` counts this task.
            let outcome = catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(next) }));
            if let Err(payload) = outcome {
                self.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(payload);
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }

    /// A borrowed worker's loop: join each new region until the leader is done.
    fn follow(&self) {
        let mut joined = None;
        let mut idle = 0u32;
        while !self.finished.load(Ordering::Acquire) {
            let epoch = unpack(self.claim.load(Ordering::Acquire)).0;
            if joined != Some(epoch) {
                self.work(epoch);
                joined = Some(epoch);
                idle = 0;
                continue;
            }
            idle = idle.saturating_add(1);
            if idle < SPINS_BEFORE_YIELD {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Releases the followers when the leader leaves, by returning or by unwinding.
struct Release<'a>(&'a Team);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        LEADING.with(|leading| leading.set(std::ptr::null()));
        self.0.finished.store(true, Ordering::Release);
    }
}

/// Runs `f` on the calling thread as the leader of a team of `threads` (itself and up to
/// `threads - 1` rayon workers), which `parallel_for` inside `f` uses. A thread that already
/// leads a team, or a team of one, runs `f` as it is.
pub fn with_team<R>(threads: usize, f: impl FnOnce() -> R) -> R {
    let threads = threads.min(rayon::current_num_threads());
    if threads <= 1 || leading() {
        return f();
    }
    let team = Team::new();
    rayon::in_place_scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|_| team.follow());
        }
        let _release = Release(&team);
        LEADING.with(|leading| leading.set(&team));
        f()
    })
}

/// Runs `task(i)` for every `i` in `0..tasks`, in parallel: on the team the calling thread
/// leads, else on rayon's pool.
pub fn parallel_for(tasks: usize, task: impl Fn(usize) + Sync) {
    match tasks {
        0 => return,
        1 => return task(0),
        _ => {}
    }
    let team = LEADING.with(Cell::get);
    if !team.is_null() && tasks <= MAX_TEAM_TASKS {
        // SAFETY: the pointer is set only while `with_team` holds the team on this thread.
        return unsafe { &*team }.run(tasks, &task);
    }
    use rayon::prelude::*;
    (0..tasks).into_par_iter().for_each(&task);
}

/// Whether the calling thread leads a team (parallel regions are cheap there).
pub fn leading() -> bool {
    LEADING.with(|leading| !leading.get().is_null())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many back-to-back regions of varied sizes, as an encoder pass makes them: every task runs
    /// exactly once, and results written by followers are visible to the leader afterwards.
    #[test]
    fn every_task_of_every_region_runs_once() {
        let counts: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
        with_team(4, || {
            assert!(leading());
            for round in 0..500 {
                let tasks = 1 + round % 97;
                parallel_for(tasks, |i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
            }
        });
        assert!(!leading());
        let expected = |i: usize| (0..500).filter(|round| i < 1 + round % 97).count();
        for (i, count) in counts.iter().enumerate() {
            assert_eq!(count.load(Ordering::Relaxed), expected(i), "task {i}");
        }
    }

    /// A panicking task fails its region on the leader once every task has finished, and the
    /// team lets go of its followers; the next team works.
    #[test]
    fn a_panicking_task_reaches_the_leader_and_frees_the_team() {
        let finished = AtomicUsize::new(0);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            with_team(3, || {
                parallel_for(64, |i| {
                    if i == 7 {
                        panic!("task 7 fails");
                    }
                    finished.fetch_add(1, Ordering::Relaxed);
                })
            })
        }));
        assert!(outcome.is_err());
        assert_eq!(finished.load(Ordering::Relaxed), 63, "the other tasks all ran before the panic surfaced");
        assert!(!leading());
        let sum = AtomicUsize::new(0);
        with_team(3, || parallel_for(10, |i| _ = sum.fetch_add(i, Ordering::Relaxed)));
        assert_eq!(sum.load(Ordering::Relaxed), 45);
    }

    /// A team inside a team is the same team; outside any, `parallel_for` is rayon.
    #[test]
    fn nested_teams_and_plain_rayon() {
        let sum = AtomicUsize::new(0);
        with_team(2, || with_team(2, || parallel_for(100, |i| _ = sum.fetch_add(i, Ordering::Relaxed))));
        parallel_for(100, |i| _ = sum.fetch_add(i, Ordering::Relaxed));
        assert_eq!(sum.load(Ordering::Relaxed), 2 * 4950);
    }
}
