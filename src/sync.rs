//! Synchronisation primitives, swapped for loom's under `cfg(keepfresh_loom)` so the concurrent
//! shell can be model-checked.

#[cfg(not(keepfresh_loom))]
mod imp {
    use std::sync::Arc;

    /// A mutex whose `lock` cannot fail.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(parking_lot::Mutex::new(value))
        }
        pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, T> {
            self.0.lock()
        }
    }

    /// A value readers load without locks and writers replace whole.
    pub(crate) struct Published<T>(arc_swap::ArcSwap<T>);

    /// A loaded value; cheap to hold, does not block writers.
    pub(crate) type Loaded<T> = arc_swap::Guard<Arc<T>>;

    impl<T> Published<T> {
        pub(crate) fn new(value: T) -> Self {
            Published(arc_swap::ArcSwap::from_pointee(value))
        }
        #[inline]
        pub(crate) fn load(&self) -> Loaded<T> {
            self.0.load()
        }
        pub(crate) fn store(&self, value: T) {
            self.0.store(Arc::new(value))
        }
    }
}

#[cfg(keepfresh_loom)]
mod imp {
    use std::sync::Arc;

    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Self {
            Mutex::new(T::default())
        }
    }

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }
        pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    pub(crate) struct Published<T>(loom::sync::RwLock<Arc<T>>);

    pub(crate) type Loaded<T> = Arc<T>;

    impl<T> Published<T> {
        pub(crate) fn new(value: T) -> Self {
            Published(loom::sync::RwLock::new(Arc::new(value)))
        }
        pub(crate) fn load(&self) -> Loaded<T> {
            self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
        }
        pub(crate) fn store(&self, value: T) {
            *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
        }
    }
}

pub(crate) use imp::{Loaded, Mutex, Published};
