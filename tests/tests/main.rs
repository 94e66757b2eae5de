//! End-to-end tests: the real server on 127.0.0.1:0, driven over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

mod api_conventions;
mod audit;
mod auth;
mod cli;
mod config;
mod convergence;
mod customer_search;
mod customers;
mod device;
mod events;
mod follow_ups;
mod identity;
mod interop;
mod jobs;
mod notifications;
mod openapi;
mod pool;
mod protocol;
mod records;
mod scope;
mod storage;
mod sync;
mod tasks;
