//! The log of one job attempt: every byte an executor produces passes through the job's
//! [`Masker`] before it reaches the terminal, a file, or (later) the server.

use crate::mask::Masker;
use std::sync::{Arc, Mutex};

/// Where masked output goes: called with masked bytes, in order.
pub type Writer = Box<dyn FnMut(&[u8]) + Send>;

/// A cheap, clonable handle to a job's log.
#[derive(Clone)]
pub struct LogSink {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    masker: Masker,
    writer: Writer,
    bytes: u64,
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSink")
    }
}

impl LogSink {
    pub fn new(masker: Masker, writer: Writer) -> LogSink {
        LogSink {
            inner: Arc::new(Mutex::new(Inner {
                masker,
                writer,
                bytes: 0,
            })),
        }
    }

    /// A sink that collects into a shared buffer (tests).
    pub fn buffer(masker: Masker) -> (LogSink, Arc<Mutex<Vec<u8>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b2 = buf.clone();
        (
            LogSink::new(
                masker,
                Box::new(move |bytes| b2.lock().expect("log buffer").extend_from_slice(bytes)),
            ),
            buf,
        )
    }

    pub fn write(&self, bytes: &[u8]) {
        let mut g = self.inner.lock().expect("log sink poisoned");
        let out = g.masker.push(bytes);
        g.bytes += bytes.len() as u64;
        if !out.is_empty() {
            (g.writer)(&out);
        }
    }

    /// A line of Gantry's own (not from the job), e.g. "Running with the shell executor".
    pub fn info(&self, line: &str) {
        self.write(format!("\x1b[36;1m{line}\x1b[0;m\n").as_bytes());
    }

    pub fn flush(&self) {
        let mut g = self.inner.lock().expect("log sink poisoned");
        let out = g.masker.finish();
        if !out.is_empty() {
            (g.writer)(&out);
        }
    }

    pub fn bytes_written(&self) -> u64 {
        self.inner.lock().expect("log sink poisoned").bytes
    }
}
