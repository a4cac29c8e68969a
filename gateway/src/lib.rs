//! quotecast gateway (work in progress)
pub mod book;
pub mod hub;
pub mod ingest;
