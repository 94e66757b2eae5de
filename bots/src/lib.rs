//! DingTalk (钉钉) and WeCom (企业微信) adapters for Outpost.
//!
//! Callback crypto and signatures, message parsing, approval cards, the outbound API clients and
//! the chat command grammar will live here, calling the CRM through a trait this crate defines.
//! The foundation only reserves its place in the workspace.
