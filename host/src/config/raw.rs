//! STUB: raw serde structs mirroring config.json.
