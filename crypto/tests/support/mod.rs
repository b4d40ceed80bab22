//! Helpers shared by the integration tests (and, by path, the fuzz target).
#![allow(dead_code)]

pub mod rng;
pub mod scenario;
