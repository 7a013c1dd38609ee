//! A `tracing` layer that keeps every event as a [`LogEntry`], for tests to assert on.

use std::sync::{Arc, Mutex, PoisonError};

use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use waylay_core::hooks::LogEntry;
use waylay_core::log::entry_of;

/// The log records captured so far, shared between the layer and the harness.
#[derive(Debug, Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<LogEntry>>>);

impl Captured {
    pub(crate) fn snapshot(&self) -> Vec<LogEntry> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let entry = entry_of(event);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entry);
    }
}
