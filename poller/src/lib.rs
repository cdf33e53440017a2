//! Pinned reactors: per-core poll loops, messaging, timers, idle/wakeup.
pub mod cpu;
