//! (being written)

mod common;
