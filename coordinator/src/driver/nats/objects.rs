//! Large JSON values by reference in the object store.

use cascade_proto::{decode, encode};
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::Shared;

pub async fn put_json(shared: &Shared, name: &str, value: &Value) -> Result<(), String> {
    let bytes = encode(value).map_err(|e| e.to_string())?;
    let mut reader = std::io::Cursor::new(bytes);
    shared
        .swarm
        .objects
        .put(name, &mut reader)
        .await
        .map_err(|e| format!("object `{name}`: {e}"))?;
    Ok(())
}

pub async fn get_json(shared: &Shared, name: &str) -> Option<Value> {
    let mut obj = shared.swarm.objects.get(name).await.ok()?;
    let mut bytes = Vec::new();
    obj.read_to_end(&mut bytes).await.ok()?;
    decode(&bytes).ok()
}
