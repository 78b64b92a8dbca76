//! The tokio adapter: the system clocks, tokio timers, tokio spawning.

use std::sync::Arc;

use super::system::{instant_for, SystemClock};
use super::{MonoTime, Runtime, Sleep, Spawn};
use futures::future::BoxFuture;

/// Timers and spawning on a tokio runtime: the one given, or the one current when the
/// credential was built, or else the one current at each call.
///
/// Outside any tokio runtime a timer never fires and a task is dropped instead of spawned (never
/// a panic); the engine fails the refresh that needed the task, so callers get an error instead
/// of waiting forever.
#[derive(Clone, Debug)]
pub struct TokioExecutor {
    handle: Option<tokio::runtime::Handle>,
    /// The runtime current at each call wins over `handle` (which was only captured at build).
    prefer_current: bool,
}

impl TokioExecutor {
    fn handle(&self) -> Option<tokio::runtime::Handle> {
        let current = || tokio::runtime::Handle::try_current().ok();
        if self.prefer_current {
            current().or_else(|| self.handle.clone())
        } else {
            self.handle.clone().or_else(current)
        }
    }
}

impl Sleep for TokioExecutor {
    fn sleep_until(&self, deadline: MonoTime) -> BoxFuture<'static, ()> {
        let at = instant_for(deadline);
        match self.handle() {
            // Entering the handle registers the timer with its time driver, so the sleep can be
            // awaited from any thread.
            Some(h) => {
                let _entered = h.enter();
                Box::pin(tokio::time::sleep_until(at.into()))
            }
            None => Box::pin(futures::future::pending()),
        }
    }
}

impl Spawn for TokioExecutor {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        match self.handle() {
            Some(h) => drop(h.spawn(task)),
            // Dropping the task runs its guards, which fail the work it was to do.
            None => drop(task),
        }
    }
}

impl Runtime {
    /// The system clocks with tokio timers and tokio spawning: on the tokio runtime current at
    /// each timer or spawn, else (from a thread outside any runtime) on the one that was current
    /// when this was called — usually while building the credential inside async code. Requires the `tokio` feature; the tokio runtime
    /// needs its time driver enabled (`enable_time()` or `#[tokio::main]`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let rt = keepfresh::runtime::Runtime::tokio();
    /// let t0 = rt.now();
    /// rt.sleep_until(t0 + std::time::Duration::from_millis(1)).await;
    /// assert!(rt.now() > t0);
    /// # }
    /// ```
    pub fn tokio() -> Runtime {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let exec = Arc::new(TokioExecutor {
                handle: Some(handle),
                prefer_current: true,
            });
            return Runtime::new(Arc::new(SystemClock), exec.clone(), exec);
        }
        // One shared instance for use outside a runtime.
        static SHARED: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| {
                let exec = Arc::new(TokioExecutor {
                    handle: None,
                    prefer_current: true,
                });
                Runtime::new(Arc::new(SystemClock), exec.clone(), exec)
            })
            .clone()
    }

    /// Like [`Runtime::tokio`], but timers and tasks run on the given runtime handle, so
    /// credentials can be used — `token()`, `invalidate()`, waiting — from threads outside the
    /// tokio runtime.
    ///
    /// ```
    /// let tokio_rt = tokio::runtime::Runtime::new().unwrap();
    /// let rt = keepfresh::runtime::Runtime::tokio_with_handle(tokio_rt.handle().clone());
    /// // A plain thread waits on a tokio timer.
    /// let deadline = rt.now() + std::time::Duration::from_millis(1);
    /// futures::executor::block_on(rt.sleep_until(deadline));
    /// assert!(rt.now() >= deadline);
    /// ```
    pub fn tokio_with_handle(handle: tokio::runtime::Handle) -> Runtime {
        let exec = Arc::new(TokioExecutor {
            handle: Some(handle),
            prefer_current: false,
        });
        Runtime::new(Arc::new(SystemClock), exec.clone(), exec)
    }
}
