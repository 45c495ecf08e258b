//! Large JSON values by reference in the object store. Objects hold plain
//! JSON text (what workers write too): readable with any tool, and never
//! mistaken for MessagePack.

use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::Shared;

pub async fn put_json(shared: &Shared, name: &str, value: &Value) -> Result<(), String> {
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
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
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(object = name, error = %e, "object is not JSON");
            None
        }
    }
}
