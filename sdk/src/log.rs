//! Leveled logging into the gateway's log; lines carry the plugin's name. The
//! [`trace!`](crate::trace), [`debug!`](crate::debug), [`info!`](crate::info),
//! [`warn!`](crate::warn) and [`error!`](crate::error) macros take `format!` arguments.

pub use crate::imports::log::Level;

#[cfg(target_arch = "wasm32")]
use crate::imports::log as host;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::fake::log as host;

/// Write `message` at `level`.
pub fn write(level: Level, message: &str) {
    host::write(level, message)
}

/// Write at trace level.
pub fn trace(message: &str) {
    write(Level::Trace, message)
}

/// Write at debug level.
pub fn debug(message: &str) {
    write(Level::Debug, message)
}

/// Write at info level.
pub fn info(message: &str) {
    write(Level::Info, message)
}

/// Write at warn level.
pub fn warn(message: &str) {
    write(Level::Warn, message)
}

/// Write at error level.
pub fn error(message: &str) {
    write(Level::Error, message)
}

/// Log at trace level with `format!` arguments.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Trace, &::std::format!($($arg)+)) };
}

/// Log at debug level with `format!` arguments.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Debug, &::std::format!($($arg)+)) };
}

/// Log at info level with `format!` arguments.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Info, &::std::format!($($arg)+)) };
}

/// Log at warn level with `format!` arguments.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Warn, &::std::format!($($arg)+)) };
}

/// Log at error level with `format!` arguments.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Error, &::std::format!($($arg)+)) };
}
