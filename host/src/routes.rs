//! STUB
pub fn build_router() {}
