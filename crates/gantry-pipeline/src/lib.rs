//! placeholder
pub mod diag;
pub mod source;
pub mod trigger;
pub mod yaml;
