//! STUB
pub struct AppState;
pub async fn serve() {}
