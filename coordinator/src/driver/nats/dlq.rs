//! Dead letters. A task message that reaches its delivery limit stays in a
//! work-queue stream for ever; the server only announces it. Every
//! coordinator hears the advisory; the first one moves the message to the
//! DLQ stream with its story, deletes it, and writes a terminal failure as
//! the attempt's result so the stage fails visibly.

use std::sync::Arc;

use async_nats::jetstream::message::PublishMessage;
use cascade_proto::wire::{self, BatchMessage, DeadLetter, ResultRecord, Route, TaskMessage};
use cascade_proto::{
    Failure, FailureKind, PROTOCOL_VERSION, TaskOutcome, TaskResult, decode, encode,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Shared;

#[derive(serde::Deserialize)]
struct Advisory {
    stream_seq: u64,
    #[serde(default)]
    deliveries: u64,
}

pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> Result<(), String> {
    let subject = format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*",
        wire::STREAM_TASKS
    );
    let mut sub = shared
        .swarm
        .client
        .subscribe(subject)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let msg = tokio::select! {
            m = sub.next() => m,
            () = cancel.cancelled() => return Ok(()),
        };
        let Some(msg) = msg else { return Ok(()) };
        let Ok(adv) = serde_json::from_slice::<Advisory>(&msg.payload) else {
            continue;
        };
        dead_letter(&shared, adv.stream_seq, adv.deliveries).await;
    }
}

pub async fn dead_letter(shared: &Shared, seq: u64, deliveries: u64) {
    let Ok(raw) = shared.swarm.tasks.get_raw_message(seq).await else {
        return;
    }; // already handled
    // A task, or a lead's batch of tasks: each gets a terminal result.
    let (tasks, route): (Vec<cascade_proto::TaskSpec>, Option<Route>) =
        match decode::<TaskMessage>(&raw.payload) {
            Ok(t) => (vec![t.spec], Some(t.route)),
            Err(_) => match decode::<BatchMessage>(&raw.payload) {
                Ok(b) => (b.tasks, None),
                Err(_) => (Vec::new(), None),
            },
        };
    let skill = tasks
        .first()
        .map_or_else(|| "undecodable".to_owned(), |t| t.skill.to_string());
    let reason = format!(
        "delivered {deliveries} times without a result: the worker crashed or lost it each time"
    );
    let letter = DeadLetter {
        v: PROTOCOL_VERSION,
        stream_seq: seq,
        subject: raw.subject.to_string(),
        deliveries,
        task: tasks.first().cloned(),
        raw: tasks.is_empty().then(|| raw.payload.to_vec()),
        reason: reason.clone(),
        at: super::now_ms(),
    };
    let Ok(bytes) = encode(&letter) else { return };
    let publish = PublishMessage::build()
        .payload(bytes.into())
        .message_id(format!("dlq:{seq}"));
    match shared
        .swarm
        .js
        .send_publish(wire::subject_dlq(&skill), publish)
        .await
    {
        Ok(ack) => {
            if ack.await.is_err() {
                return;
            }
        }
        Err(_) => return,
    }
    let _ = shared.swarm.tasks.delete_message(seq).await;
    for spec in tasks {
        tracing::error!(run_id = %spec.run_id, stage = %spec.stage_id, task_id = %spec.task_id, attempt = %spec.attempt, deliveries, "task dead-lettered");
        crate::http::metrics::task_dead_lettered(spec.skill.as_str());
        let result = TaskResult {
            task_id: spec.task_id.clone(),
            attempt: spec.attempt,
            worker: String::new(),
            duration_ms: 0,
            outcome: TaskOutcome::Failed(Failure::new(
                FailureKind::Terminal,
                format!("dead-lettered: {reason}"),
            )),
            usage: None,
            model: None,
            notes: Vec::new(),
        };
        let rec = ResultRecord {
            v: PROTOCOL_VERSION,
            run_id: spec.run_id.clone(),
            result,
            outputs_ref: None,
            route: route.clone(),
        };
        if let Ok(bytes) = encode(&rec) {
            let key = wire::key_result(&spec.run_id, &spec.task_id, spec.attempt);
            let _ = shared.swarm.results.create(&key, bytes.into()).await;
        }
    }
}
