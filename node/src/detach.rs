//! Work that must finish even if whoever awaits it goes away.
//!
//! What follows a commit (pushing a message to its receiver, a receipt to its sender) must
//! happen even when the client that caused it has gone. Spawning a task for every message
//! guaranteed that, at the price of a task (and a channel for its answer) per operation. A
//! [`Detachable`] instead runs the work as the caller's own future, and only when the caller
//! drops it unfinished does it move the rest into a task of its own.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::task::TaskTracker;

/// `work`, run by whoever polls it; if dropped before it is done, finished in a task tracked
/// by `tasks` (so graceful shutdown waits for it), its output discarded.
pub(crate) fn finish_even_if_dropped<T: Send + 'static>(
    tasks: &TaskTracker,
    work: impl Future<Output = T> + Send + 'static,
) -> Detachable<T> {
    Detachable { work: Some(Box::pin(work)), tasks: tasks.clone() }
}

/// See [`finish_even_if_dropped`].
pub(crate) struct Detachable<T: Send + 'static> {
    /// `None` once it has finished.
    work: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
    tasks: TaskTracker,
}

impl<T: Send + 'static> Future for Detachable<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        let Some(work) = this.work.as_mut() else {
            // Polled again after it finished: it has nothing more to give.
            return Poll::Pending;
        };
        let output = std::task::ready!(work.as_mut().poll(cx));
        this.work = None;
        Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for Detachable<T> {
    fn drop(&mut self) {
        let Some(work) = self.work.take() else { return };
        // Without a runtime (it is being torn down) there is nowhere to finish; what was
        // committed is redelivered from the store on the next connection.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.tasks.spawn_on(
                async move {
                    work.await;
                },
                &runtime,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::sync::oneshot;

    use super::*;

    #[tokio::test]
    async fn awaited_it_runs_in_place_and_gives_its_output() {
        let tasks = TaskTracker::new();
        assert_eq!(finish_even_if_dropped(&tasks, async { 7 }).await, 7);
        assert!(tasks.is_empty(), "no task was spawned");
    }

    #[tokio::test]
    async fn dropped_unfinished_it_still_runs_to_the_end() {
        let tasks = TaskTracker::new();
        let (go, wait) = oneshot::channel::<()>();
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        let mut work = finish_even_if_dropped(&tasks, async move {
            let _ = wait.await;
            flag.store(true, Ordering::SeqCst);
        });
        // Polled once, so it has started and waits on `go`; then its caller goes away.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut work).poll(&mut cx).is_pending());
        drop(work);
        assert!(!finished.load(Ordering::SeqCst));
        go.send(()).expect("the work still waits");
        tasks.close();
        tokio::time::timeout(std::time::Duration::from_secs(10), tasks.wait()).await.expect("the work finished");
        assert!(finished.load(Ordering::SeqCst));
    }
}
