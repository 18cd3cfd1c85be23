//! Server-Sent Events: STUB
