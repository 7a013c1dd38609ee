//! Bridging `tracing` to the `log` hook: a subscriber layer that turns events into
//! [`LogEntry`] records and hands them to the addon manager without blocking.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

use crate::flow::now;
use crate::hooks::{LogEntry, LogLevel, in_log_hook};
use crate::manager::ManagerHandle;

/// A `tracing_subscriber` layer delivering events at or above `min_level` to the addons'
/// `log` hook. Records emitted inside a `log` hook are never delivered (no recursion), and
/// nothing blocks: when the manager is saturated, records are dropped.
#[derive(Debug, Clone)]
pub struct AddonLogLayer {
    manager: ManagerHandle,
    min_level: Level,
}

impl AddonLogLayer {
    /// Forwards records of `min_level` and more severe to `manager`.
    pub fn new(manager: ManagerHandle, min_level: Level) -> Self {
        Self { manager, min_level }
    }
}

/// Converts a `tracing` level.
pub fn level_of(l: &Level) -> LogLevel {
    match *l {
        Level::TRACE => LogLevel::Trace,
        Level::DEBUG => LogLevel::Debug,
        Level::INFO => LogLevel::Info,
        Level::WARN => LogLevel::Warn,
        Level::ERROR => LogLevel::Error,
    }
}

/// Renders an event as one line: the message, then `key=value` for each other field.
#[derive(Default)]
struct Render {
    message: String,
    fields: String,
}

impl Visit for Render {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }
}

/// Turns a `tracing` event into a log entry.
pub fn entry_of(event: &Event<'_>) -> LogEntry {
    let mut r = Render::default();
    event.record(&mut r);
    let meta = event.metadata();
    LogEntry {
        level: level_of(meta.level()),
        target: meta.target().to_owned(),
        message: format!("{}{}", r.message, r.fields),
        timestamp: now(),
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for AddonLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // Level ordering in tracing: TRACE > DEBUG > ... > ERROR.
        if *event.metadata().level() > self.min_level || in_log_hook() {
            return;
        }
        if !self.manager.handles(crate::hooks::HookKind::Log) {
            return;
        }
        self.manager.log(entry_of(event));
    }
}

/// The manager that [`GlobalAddonLogLayer`] delivers to: the proxy started last.
static GLOBAL: arc_swap::ArcSwapOption<ManagerHandle> = arc_swap::ArcSwapOption::const_empty();

/// Makes `manager` the receiver of [`GlobalAddonLogLayer`]'s records (the proxy calls this
/// when it starts, so a binary can install its subscriber before the manager exists).
pub fn attach_global(manager: &ManagerHandle) {
    GLOBAL.store(Some(std::sync::Arc::new(manager.clone())));
}

/// Like [`AddonLogLayer`], but delivering to whichever manager was last given to
/// [`attach_global`]; records before that are not delivered.
#[derive(Debug, Clone)]
pub struct GlobalAddonLogLayer {
    min_level: Level,
}

impl GlobalAddonLogLayer {
    /// Delivers records of `min_level` and more severe.
    pub fn new(min_level: Level) -> Self {
        Self { min_level }
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for GlobalAddonLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() > self.min_level || in_log_hook() {
            return;
        }
        let guard = GLOBAL.load();
        if let Some(manager) = guard.as_ref()
            && manager.handles(crate::hooks::HookKind::Log)
        {
            manager.log(entry_of(event));
        }
    }
}
