//! End-to-end tests: the real server on 127.0.0.1:0, driven over HTTP.

mod api_conventions;
mod audit;
mod auth;
mod cli;
mod identity;
mod openapi;
mod scope;
mod storage;
