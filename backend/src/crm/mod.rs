//! The domain areas, one folder each, holding model, service functions and routes.

pub mod customers;
pub mod digest;
pub mod events;
pub mod follow_ups;
pub mod identity;
pub mod notifications;
pub mod pool;
pub mod records;
pub mod tasks;
