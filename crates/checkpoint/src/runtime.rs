//! The store's private tokio runtime: the bridge from the engine's synchronous calls to
//! object_store's async API.

use std::future::Future;

use tokio::runtime::{Builder, Runtime};

use crate::error::RuntimeError;

/// Two I/O threads per store: S3 requests are async, so threads only parse and sign; local file
/// operations run on tokio's blocking pool, which grows with concurrent calls.
const IO_THREADS: usize = 2;

/// A multi-thread tokio runtime that runs each operation as a task and blocks the caller until
/// it finishes.
///
/// Operations run as tasks on the runtime's own threads, not with `Runtime::block_on` on the
/// caller's: `block_on` panics when the caller is itself inside a tokio runtime (an async
/// server calling the store), while waiting for a task's handle works from any thread.
#[derive(Debug)]
pub(crate) struct IoRuntime {
    /// `None` only while dropping.
    runtime: Option<Runtime>,
}

impl IoRuntime {
    /// Starts the runtime's threads.
    pub(crate) fn start() -> std::io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(IO_THREADS)
            .thread_name("checkpoint-io")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Runs `future` on the runtime and waits for its output.
    pub(crate) fn run<F>(&self, future: F) -> Result<F::Output, RuntimeError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = self.runtime.as_ref().ok_or(RuntimeError::Stopped)?;
        Ok(futures::executor::block_on(runtime.spawn(future))?)
    }
}

impl Drop for IoRuntime {
    /// Stops the threads without waiting: every operation has finished (each call waits for its
    /// own), and a blocking shutdown would panic when the store is dropped in an async context.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
