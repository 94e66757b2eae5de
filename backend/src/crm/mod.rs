//! The domain areas, one folder each, holding model, service functions and routes.

pub mod customers;
pub mod identity;
