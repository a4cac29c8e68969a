//! ingest
pub mod sequencer;
