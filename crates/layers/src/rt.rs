//! Runtime glue: hyper's executor on the worker's local task set.

use std::future::Future;

/// Spawns hyper's background futures (HTTP/2 streams) on the current worker thread, so a
/// connection and everything it spawns stay on one thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}
