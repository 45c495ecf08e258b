//! `coordinator workers`: the live workers, as they registered and last
//! heartbeat in `cascade-workers` (the bucket's age limit removes a worker
//! that stopped beating).

use cascade_proto::wire::{WorkerInfo, WorkerRole};
use cascade_swarm::NatsArgs;
use clap::Args;
use serde_json::{Value, json};

use super::swarm::{self, table};
use super::{EXIT_OK, EXIT_RUN_FAILED};

#[derive(Debug, Args)]
pub struct WorkersArgs {
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

pub async fn workers(a: WorkersArgs) -> u8 {
    match list(&a).await {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_RUN_FAILED
        }
    }
}

async fn list(a: &WorkersArgs) -> Result<(), swarm::ClientError> {
    let swarm = swarm::open(&a.nats).await?;
    let mut workers = swarm.stores.registry.list().await?;
    workers.sort_by(|a, b| a.name.cmp(&b.name));
    let now = cascade_swarm::clock::now_ms();
    let since = |w: &WorkerInfo| now.saturating_sub(w.heartbeat_at) as f64 / 1000.0;
    if a.json {
        let list: Vec<Value> = workers
            .iter()
            .map(|w| {
                let mut v = serde_json::to_value(w).unwrap_or(Value::Null);
                if let Some(m) = v.as_object_mut() {
                    m.insert("heartbeat_age_s".into(), json!(since(w)));
                }
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(());
    }
    if workers.is_empty() {
        eprintln!(
            "no live workers (bucket `{}` is empty)",
            cascade_proto::wire::BUCKET_WORKERS
        );
        return Ok(());
    }
    let mut rows = vec![
        [
            "NAME",
            "SKILLS",
            "MODELS",
            "LABELS",
            "ROLE",
            "LOAD",
            "DRAINING",
            "HEARTBEAT",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for w in &workers {
        let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rows.push(vec![
            w.name.clone(),
            w.skills.join(","),
            if w.models.is_empty() {
                "-".into()
            } else {
                w.models.join(",")
            },
            if labels.is_empty() {
                "-".into()
            } else {
                labels.join(",")
            },
            match w.role {
                WorkerRole::Member => "member".into(),
                WorkerRole::Lead => "lead".into(),
            },
            format!("{}/{}", w.in_flight, w.concurrency),
            if w.draining {
                "yes".into()
            } else {
                "no".into()
            },
            format!("{:.1}s ago", since(w)),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}
