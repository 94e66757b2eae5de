//! HTTP plumbing shared by every route: body and query extractors that answer bad input with
//! problem+json, cursor pagination, request ids, idempotency keys, and the router itself.

pub mod extract;
pub mod idempotency;
pub mod pagination;
pub mod router;

pub use extract::{ApiJson, ApiQuery, ClientAddress, PathKey, RequestId};
pub use pagination::{Order, PageParams, fetch_page, page_of};
