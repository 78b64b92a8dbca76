//! The tokio adapter: real monotonic and wall clocks, tokio timers, `tokio::spawn`.

use std::sync::Arc;

use super::system::{instant_of, origin, SystemClock};
use super::{MonoTime, Runtime, Sleep, Spawn};
use futures::future::BoxFuture;

/// Timers and spawning on the ambient tokio runtime (or a given handle).
#[derive(Clone, Debug)]
pub struct TokioExecutor {
    handle: Option<tokio::runtime::Handle>,
}

impl Sleep for TokioExecutor {
    fn sleep_until(&self, deadline: MonoTime) -> BoxFuture<'static, ()> {
        // A deadline before the process's origin is already past.
        let at = instant_of(deadline).unwrap_or_else(origin);
        Box::pin(tokio::time::sleep_until(at.into()))
    }
}

impl Spawn for TokioExecutor {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        match &self.handle {
            Some(h) => drop(h.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }
}

impl Runtime {
    /// The system clocks with tokio timers and `tokio::spawn` on the runtime that is current when
    /// a task is spawned. Requires the `tokio` feature; the tokio runtime needs its time driver
    /// enabled (`enable_time()` or `#[tokio::main]`).
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
        // One shared instance: every credential built with the default runtime clones three
        // `Arc`s instead of allocating them.
        static SHARED: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
        SHARED
            .get_or_init(|| {
                let exec = Arc::new(TokioExecutor { handle: None });
                Runtime::new(Arc::new(SystemClock), exec.clone(), exec)
            })
            .clone()
    }

    /// Like [`Runtime::tokio`], but spawns on the given runtime handle, so credentials can be
    /// used from threads outside the tokio runtime.
    ///
    /// ```
    /// let tokio_rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    /// let rt = keepfresh::runtime::Runtime::tokio_with_handle(tokio_rt.handle().clone());
    /// # let _ = rt;
    /// ```
    pub fn tokio_with_handle(handle: tokio::runtime::Handle) -> Runtime {
        let exec = Arc::new(TokioExecutor {
            handle: Some(handle),
        });
        Runtime::new(Arc::new(SystemClock), exec.clone(), exec)
    }
}
