//! Infrastructure every domain area stands on: the store, authentication, HTTP plumbing and the
//! audit log. Nothing here knows about customers or pools.

pub mod audit;
pub mod auth;
pub mod clock;
pub mod db;
pub mod http;
pub mod ids;
