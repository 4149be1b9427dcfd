//! Locking shared state that must outlive a panic elsewhere.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the state as it is when another thread panicked while holding it: a
/// poll loop or reconcile that panicked must not wedge every other one.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
