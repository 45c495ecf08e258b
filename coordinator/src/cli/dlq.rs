//! `coordinator dlq`: the dead letters in `CASCADE_DLQ`, by id (the DLQ
//! stream sequence): list, show, replay, drop.
//!
//! What replay does. A task is dead-lettered once its message reached the
//! delivery limit, and the coordinator that moved it wrote a terminal
//! failure as that attempt's result: the run has taken (or will take) the
//! failure, and a re-sent copy of the same attempt would be ignored (the
//! first result of an attempt wins; and only a coordinator can give a task
//! the grant its worker's result must prove). So replay submits the
//! letter's *run* again, once its run is over: a new run with the same
//! files and inputs, under the idempotency key `dlq-replay-<run>` (several
//! letters of one run give one new run), and removes the letter. It refuses
//! (exit 1, the letter kept) a letter whose run is still going, whose run
//! succeeded anyway, whose submission is gone, and a letter that holds no
//! task (garbage or a refused submission: read it, then drop it).
//!
//! Exit codes: 0 done; 1 refused, or the server could not be used; 2 no
//! such letter.

use cascade_proto::wire::{RunState, Submission};
use cascade_proto::{PROTOCOL_VERSION, RunId};
use cascade_swarm::NatsArgs;
use cascade_swarm::store::StoredLetter;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::swarm::{self, Client, ClientError, table};
use super::{EXIT_INVALID, EXIT_OK, EXIT_RUN_FAILED};

#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Every dead letter: id, when, skill, run, stage, task, attempt, reason.
    List(DlqListArgs),
    /// One dead letter in full.
    Show(DlqOneArgs),
    /// Submit the run of each letter again (once that run is over) and remove the letter.
    Replay(DlqManyArgs),
    /// Delete dead letters.
    Drop(DlqManyArgs),
}

#[derive(Debug, Args)]
pub struct DlqListArgs {
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Args)]
pub struct DlqOneArgs {
    /// The letter's id (as `dlq list` shows it).
    #[arg(value_name = "ID")]
    pub id: u64,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Args)]
pub struct DlqManyArgs {
    /// Letter ids (as `dlq list` shows them).
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<u64>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// Why a letter was not replayed or dropped.
#[derive(Debug, thiserror::Error)]
enum DlqError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("dead letter {0}: no such letter (`coordinator dlq list` shows them)")]
    NoLetter(u64),
    #[error(
        "dead letter {0}: it holds no task ({1}): nothing to replay; read it with \
         `coordinator dlq show {0}`, then `coordinator dlq drop {0}`"
    )]
    NoTask(u64, String),
    #[error(
        "dead letter {id}: run `{run}` is {state}: attempt {attempt} of task `{task}` has its \
         failure recorded already, so a copy of it would be ignored; wait for the run to end \
         (or `coordinator cancel {run}`), then replay: that submits the run again"
    )]
    StillGoing {
        id: u64,
        run: RunId,
        state: &'static str,
        task: String,
        attempt: u32,
    },
    #[error(
        "dead letter {id}: run `{run}` succeeded anyway: nothing to replay \
         (`coordinator dlq drop {id}`)"
    )]
    Succeeded { id: u64, run: RunId },
    #[error(
        "dead letter {id}: run `{run}` has no record or submission any more (retention): cannot submit it \
         again; submit its cascade with `coordinator submit`, then drop the letter"
    )]
    NoSubmission { id: u64, run: RunId },
    #[error("dead letter {id}: submitting run `{run}` again: {source}")]
    Submit {
        id: u64,
        run: RunId,
        #[source]
        source: super::submit::SubmitError,
    },
}

impl DlqError {
    fn exit(&self) -> u8 {
        match self {
            DlqError::NoLetter(_) => EXIT_INVALID,
            _ => EXIT_RUN_FAILED,
        }
    }
}

pub async fn dlq(a: DlqArgs) -> u8 {
    match a.command {
        DlqCommand::List(a) => report(list(&a).await),
        DlqCommand::Show(a) => report(show(&a).await),
        DlqCommand::Replay(a) => many(&a, Action::Replay).await,
        DlqCommand::Drop(a) => many(&a, Action::Drop).await,
    }
}

fn report(r: Result<(), DlqError>) -> u8 {
    match r {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit()
        }
    }
}

/// A letter as JSON: the decoded letter, its id and DLQ subject; the raw
/// message (lossy UTF-8) when it is not a letter, or the letter holds one.
fn letter_json(l: &StoredLetter) -> Value {
    let mut v = match &l.letter {
        Some(letter) => {
            let mut v = serde_json::to_value(letter).unwrap_or(Value::Null);
            if let (Some(m), Some(raw)) = (v.as_object_mut(), &letter.raw) {
                m.insert("raw".into(), json!(String::from_utf8_lossy(raw)));
            }
            v
        }
        None => json!({"raw": String::from_utf8_lossy(&l.raw), "reason": "not a dead letter"}),
    };
    if let Some(m) = v.as_object_mut() {
        m.insert("id".into(), json!(l.id));
        m.insert("dlq_subject".into(), json!(l.subject));
    }
    v
}

async fn list(a: &DlqListArgs) -> Result<(), DlqError> {
    let c = swarm::open(&a.nats).await?;
    let letters = c
        .stores
        .dead_letters
        .list()
        .await
        .map_err(ClientError::from)?;
    if a.json {
        let all: Vec<Value> = letters.iter().map(letter_json).collect();
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        return Ok(());
    }
    if letters.is_empty() {
        eprintln!(
            "no dead letters (stream `{}` is empty)",
            cascade_proto::wire::STREAM_DLQ
        );
        return Ok(());
    }
    let now = cascade_swarm::clock::now_ms();
    let mut rows = vec![
        [
            "ID",
            "WHEN",
            "SKILL",
            "RUN",
            "STAGE",
            "TASK",
            "ATTEMPT",
            "DELIVERIES",
            "REASON",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for l in &letters {
        let Some(letter) = &l.letter else {
            rows.push(vec![
                l.id.to_string(),
                "-".into(),
                l.subject.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "not a dead letter".into(),
            ]);
            continue;
        };
        let dash = || "-".to_owned();
        let t = letter.task.as_ref();
        rows.push(vec![
            l.id.to_string(),
            swarm::age(letter.at, now),
            t.map_or_else(|| letter.subject.clone(), |t| t.skill.to_string()),
            t.map_or_else(dash, |t| t.run_id.to_string()),
            t.map_or_else(dash, |t| t.stage_id.to_string()),
            t.map_or_else(dash, |t| t.task_id.to_string()),
            t.map_or_else(dash, |t| t.attempt.0.to_string()),
            letter.deliveries.to_string(),
            letter.reason.clone(),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

async fn show(a: &DlqOneArgs) -> Result<(), DlqError> {
    let c = swarm::open(&a.nats).await?;
    let l = c
        .stores
        .dead_letters
        .get(a.id)
        .await
        .map_err(ClientError::from)?
        .ok_or(DlqError::NoLetter(a.id))?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&letter_json(&l)).unwrap_or_default()
        );
        return Ok(());
    }
    println!("id:          {}", l.id);
    println!("dlq subject: {}", l.subject);
    let Some(letter) = &l.letter else {
        println!("not a dead letter: {}", String::from_utf8_lossy(&l.raw));
        return Ok(());
    };
    let now = cascade_swarm::clock::now_ms();
    println!(
        "at:          {} ({})",
        letter.at,
        swarm::age(letter.at, now)
    );
    println!("subject:     {}", letter.subject);
    println!("stream seq:  {}", letter.stream_seq);
    println!("deliveries:  {}", letter.deliveries);
    println!("reason:      {}", letter.reason);
    if let Some(t) = &letter.task {
        println!("run:         {}", t.run_id);
        println!("stage:       {}", t.stage_id);
        println!("task:        {}", t.task_id);
        println!("skill:       {}", t.skill);
        println!("attempt:     {}", t.attempt.0);
        println!(
            "inputs:      {}",
            serde_json::to_string_pretty(&t.inputs).unwrap_or_default()
        );
    }
    if let Some(raw) = &letter.raw {
        println!("raw:         {}", String::from_utf8_lossy(raw));
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Action {
    Replay,
    Drop,
}

/// Replays or drops each letter; one that fails does not stop the others.
/// Exit: the worst of them.
async fn many(a: &DlqManyArgs, action: Action) -> u8 {
    let c = match swarm::open(&a.nats).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_RUN_FAILED;
        }
    };
    let mut exit = EXIT_OK;
    let mut out = Vec::new();
    for &id in &a.ids {
        let r = match action {
            Action::Replay => replay(&c, id).await,
            Action::Drop => drop_letter(&c, id)
                .await
                .map(|()| json!({"id": id, "dropped": true})),
        };
        match r {
            Ok(v) => {
                if !a.json {
                    match action {
                        Action::Drop => println!("dropped dead letter {id}"),
                        Action::Replay => println!(
                            "replayed dead letter {id}: run {} submitted again as run {}{}",
                            v["run_id"].as_str().unwrap_or_default(),
                            v["new_run_id"].as_str().unwrap_or_default(),
                            if v["duplicate"] == json!(true) {
                                " (submitted before, by the replay of another of its letters)"
                            } else {
                                ""
                            }
                        ),
                    }
                }
                out.push(v);
            }
            Err(e) => {
                eprintln!("error: {e}");
                out.push(json!({"id": id, "error": e.to_string()}));
                exit = exit.max(e.exit());
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    exit
}

async fn drop_letter(c: &Client, id: u64) -> Result<(), DlqError> {
    if c.stores
        .dead_letters
        .remove(id)
        .await
        .map_err(ClientError::from)?
    {
        Ok(())
    } else {
        Err(DlqError::NoLetter(id))
    }
}

async fn replay(c: &Client, id: u64) -> Result<Value, DlqError> {
    let l = c
        .stores
        .dead_letters
        .get(id)
        .await
        .map_err(ClientError::from)?
        .ok_or(DlqError::NoLetter(id))?;
    let Some(letter) = &l.letter else {
        return Err(DlqError::NoTask(id, "not a dead letter".into()));
    };
    let Some(task) = &letter.task else {
        return Err(DlqError::NoTask(
            id,
            format!("a message on `{}` that did not decode", letter.subject),
        ));
    };
    let run = task.run_id.clone();
    let record = swarm::run_record(c, &run).await?;
    match record.as_ref().map(|r| r.state) {
        Some(RunState::Success) => return Err(DlqError::Succeeded { id, run }),
        Some(s @ (RunState::Queued | RunState::Running)) => {
            return Err(DlqError::StillGoing {
                id,
                run,
                state: if s == RunState::Queued {
                    "queued"
                } else {
                    "still running"
                },
                task: task.task_id.to_string(),
                attempt: task.attempt.0,
            });
        }
        None => return Err(DlqError::NoSubmission { id, run }),
        Some(RunState::Failed | RunState::Partial) => {}
    }
    let Some(old) = swarm::submission(c, &run).await? else {
        return Err(DlqError::NoSubmission { id, run });
    };
    let mut again = Submission {
        v: PROTOCOL_VERSION,
        run_id: RunId::new(uuid::Uuid::now_v7().to_string()),
        idempotency_key: Some(format!("dlq-replay-{run}")),
        main: old.main,
        files: old.files,
        inputs: old.inputs,
        submitted_at: cascade_swarm::clock::now_ms(),
        submitted_by: super::submit::submitted_by(),
    };
    let duplicate =
        super::submit::send(c, &mut again)
            .await
            .map_err(|source| DlqError::Submit {
                id,
                run: run.clone(),
                source,
            })?;
    // Submitted: the letter is done with (a crash before this line leaves
    // it, and replaying it again finds the same new run by its key).
    drop_letter(c, id).await?;
    Ok(json!({
        "id": id,
        "run_id": run.as_str(),
        "new_run_id": again.run_id.as_str(),
        "duplicate": duplicate,
    }))
}
