//! `status`, `watch`, `cancel` and `results`: a swarm run seen through its
//! record in `cascade-runs` and its report in `cascade-reports`.
//!
//! Exit codes: 0 done; 1 the run failed or is partial (`watch`), is not
//! finished (`results`), is already over (`cancel`), or the server could not
//! be used; 2 no such run.

use std::path::PathBuf;

use cascade_proto::wire::{self, CancelRequest, RunRecord, RunState};
use cascade_proto::{PROTOCOL_VERSION, RunId};
use cascade_swarm::NatsArgs;
use cascade_swarm::store::{CancelOutcome, Created, StoreError};
use clap::Args;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::swarm::{self, Client, ClientError, StageChanges, age, change_text, table};
use super::{EXIT_INVALID, EXIT_OK, EXIT_RUN_FAILED, check_writable, write_atomically};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The run id (as `submit` printed it); without it, recent runs.
    #[arg(value_name = "RUN")]
    pub run: Option<String>,
    /// Most runs listed, newest first.
    #[arg(
        long,
        default_value_t = 20,
        value_name = "N",
        env = "CASCADE_STATUS_LIMIT"
    )]
    pub limit: usize,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[arg(value_name = "RUN")]
    pub run: String,
    /// One JSON object per change on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    #[arg(value_name = "RUN")]
    pub run: String,
    /// Why, recorded in the run.
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "cancelled from the command line",
        env = "CASCADE_CANCEL_REASON"
    )]
    pub reason: String,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Args)]
pub struct ResultsArgs {
    #[arg(value_name = "RUN")]
    pub run: String,
    /// Write the results to this file instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE", env = "CASCADE_OUTPUT")]
    pub output: Option<PathBuf>,
    /// Print JSON on stdout (the results are JSON already: accepted for
    /// symmetry with the other commands).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

fn fail(e: &dyn std::fmt::Display) -> u8 {
    eprintln!("error: {e}");
    EXIT_RUN_FAILED
}

fn no_such_run(run: &RunId) -> u8 {
    eprintln!(
        "error: no run `{run}` (not in bucket `{}`)",
        wire::BUCKET_RUNS
    );
    EXIT_INVALID
}

fn state_name(s: RunState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn status(a: StatusArgs) -> u8 {
    let swarm = match swarm::open(&a.nats).await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    match &a.run {
        Some(run) => status_one(&swarm, &RunId::new(run.as_str()), a.json).await,
        None => match status_all(&swarm, a.limit, a.json).await {
            Ok(()) => EXIT_OK,
            Err(e) => fail(&e),
        },
    }
}

async fn status_one(swarm: &Client, run: &RunId, json: bool) -> u8 {
    let record = match swarm::run_record(swarm, run).await {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let Some(r) = record else {
        // Submitted, not yet picked up by a coordinator?
        return match swarm::submission(swarm, run).await {
            Ok(Some(s)) => {
                if json {
                    print_json(
                        &json!({"run_id": run.as_str(), "state": "submitted", "submitted_at": s.submitted_at, "main": s.main}),
                    );
                } else {
                    println!(
                        "run {run}: submitted ({}), no coordinator has started it yet",
                        s.main
                    );
                }
                EXIT_OK
            }
            Ok(None) => no_such_run(run),
            Err(e) => fail(&e),
        };
    };
    if json {
        print_json(&serde_json::to_value(&r).unwrap_or(Value::Null));
        return EXIT_OK;
    }
    let now = cascade_swarm::clock::now_ms();
    println!("run       {}", r.run_id);
    println!("cascade   {}", r.cascade);
    println!("state     {}", state_name(r.state));
    println!("owner     {}", r.owner.as_deref().unwrap_or("-"));
    println!("created   {}", age(r.created_at, now));
    println!("updated   {}", age(r.updated_at, now));
    if let Some(c) = &r.cancel_requested {
        println!("cancel    requested: {c}");
    }
    if let Some(e) = &r.error {
        println!("error     {e}");
    }
    if let Some(d) = &r.degraded {
        println!("degraded  {d}");
    }
    if !r.stages.is_empty() {
        let mut rows = vec![vec!["STAGE".to_owned(), "STATUS".to_owned()]];
        let waiting = !r.waiting.is_empty();
        if waiting {
            rows[0].push("WAITING FOR".to_owned());
        }
        rows.extend(r.stages.iter().map(|(k, v)| {
            let mut row = vec![k.clone(), v.clone()];
            if waiting {
                row.push(r.waiting.get(k).cloned().unwrap_or_default());
            }
            row
        }));
        print!("\n{}", table(&rows));
    }
    EXIT_OK
}

async fn status_all(swarm: &Client, limit: usize, json: bool) -> Result<(), ClientError> {
    let records = all_records(swarm).await?;
    let mut records: Vec<RunRecord> = records;
    records.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    records.truncate(limit);
    if json {
        print_json(&serde_json::to_value(&records).unwrap_or(Value::Null));
        return Ok(());
    }
    let now = cascade_swarm::clock::now_ms();
    let mut rows = vec![
        [
            "RUN", "CASCADE", "STATE", "STAGES", "OWNER", "CREATED", "UPDATED",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for r in &records {
        let done = r
            .stages
            .values()
            .filter(|s| !matches!(s.as_str(), "pending" | "running"))
            .count();
        rows.push(vec![
            r.run_id.to_string(),
            r.cascade.clone(),
            state_name(r.state),
            format!("{done}/{}", r.stages.len()),
            r.owner.clone().unwrap_or_else(|| "-".into()),
            age(r.created_at, now),
            age(r.updated_at, now),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

/// Every decodable run record (the store warns of the others).
async fn all_records(swarm: &Client) -> Result<Vec<RunRecord>, ClientError> {
    Ok(swarm.stores.runs.list().await?)
}

pub async fn watch(a: WatchArgs, cancel: CancellationToken) -> u8 {
    let run = RunId::new(a.run.as_str());
    let swarm = match swarm::open(&a.nats).await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    // A run is watched from its submission on: it may not have a record yet.
    match swarm::run_record(&swarm, &run).await {
        Ok(Some(_)) => {}
        Ok(None) => match swarm::submission(&swarm, &run).await {
            Ok(Some(_)) => eprintln!("run {run}: submitted, waiting for a coordinator"),
            Ok(None) => return no_such_run(&run),
            Err(e) => return fail(&e),
        },
        Err(e) => return fail(&e),
    }
    let mut changes = StageChanges::default();
    let mut waits = swarm::WaitingChanges::default();
    let mut state: Option<RunState> = None;
    let followed = swarm::follow(&swarm, &run, &cancel, |r| {
        let state_changed = state != Some(r.state);
        state = Some(r.state);
        let stages = changes.diff(r);
        for (stage, why) in waits.diff(r) {
            if a.json {
                println!(
                    "{}",
                    json!({"run_id": run.as_str(), "stage": stage, "waiting_for": why})
                );
            } else {
                println!("{}", swarm::waiting_text(&stage, &why));
            }
        }
        if let Some(change) = waits.degraded(r) {
            if a.json {
                println!(
                    "{}",
                    json!({"run_id": run.as_str(), "degraded": r.degraded})
                );
            } else {
                println!("{}", change.text());
            }
        }
        if a.json {
            for (stage, _) in &stages {
                let status = r.stages.get(stage).cloned().unwrap_or_default();
                println!(
                    "{}",
                    json!({"run_id": run.as_str(), "stage": stage, "status": status})
                );
            }
            if state_changed {
                println!(
                    "{}",
                    json!({"run_id": run.as_str(), "state": r.state, "error": r.error})
                );
            }
        } else {
            for (stage, status) in &stages {
                println!("{}", change_text(stage, status));
            }
            if state_changed {
                match &r.error {
                    Some(e) => println!("run {run}: {}: {e}", state_name(r.state)),
                    None => println!("run {run}: {}", state_name(r.state)),
                }
            }
        }
    })
    .await;
    match followed {
        Ok(r) if r.state == RunState::Success => EXIT_OK,
        Ok(_) => EXIT_RUN_FAILED,
        Err(e) => fail(&e),
    }
}

pub async fn cancel(a: CancelArgs) -> u8 {
    let run = RunId::new(a.run.as_str());
    let swarm = match swarm::open(&a.nats).await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let outcome = match request_cancel(&swarm, &run, &a.reason).await {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    let code = match &outcome {
        Cancel::NoSuchRun => return no_such_run(&run),
        Cancel::AlreadyOver(state) => {
            eprintln!("run {run} is already over: {}", state_name(*state));
            EXIT_RUN_FAILED
        }
        Cancel::Requested { .. } => EXIT_OK,
    };
    if let Cancel::Requested { queued } = outcome {
        // A hint to workers to stop what they run for it; the record is
        // what the coordinator acts on.
        let req = CancelRequest {
            v: PROTOCOL_VERSION,
            run_id: run.clone(),
            task_id: None,
            attempt: None,
        };
        if let Err(e) = swarm.stores.tasks.cancel(&req).await {
            eprintln!("warning: run {run}: the cancel hint to workers was not sent: {e}");
        }
        let _ = swarm.stores.tasks.flush().await;
        if a.json {
            println!(
                "{}",
                json!({"run_id": run.as_str(), "cancel_requested": true, "queued": queued})
            );
        } else if queued {
            println!("run {run}: cancel requested before a coordinator started it");
        } else {
            println!("run {run}: cancel requested");
        }
    }
    code
}

enum Cancel {
    NoSuchRun,
    AlreadyOver(RunState),
    Requested { queued: bool },
}

/// Sets `cancel_requested` on the record (the store's compare-and-set). A
/// run submitted but not yet started gets a queued record carrying the
/// request (the coordinator takes that record over).
async fn request_cancel(c: &Client, run: &RunId, reason: &str) -> Result<Cancel, ClientError> {
    // A record may appear between the two steps: then ask again (bounded).
    for _ in 0..100 {
        let outcome = match c.stores.runs.request_cancel(run, reason).await {
            Err(StoreError::Contended { .. }) => {
                return Err(ClientError::CancelContended(run.clone()));
            }
            other => other?,
        };
        match outcome {
            CancelOutcome::AlreadyOver(state) => return Ok(Cancel::AlreadyOver(state)),
            CancelOutcome::AlreadyRequested(_) => return Ok(Cancel::Requested { queued: false }),
            CancelOutcome::Requested(state) => {
                return Ok(Cancel::Requested {
                    queued: state == RunState::Queued,
                });
            }
            CancelOutcome::NoRecord => {}
        }
        let Some(s) = swarm::submission(c, run).await? else {
            return Ok(Cancel::NoSuchRun);
        };
        let now = cascade_swarm::clock::now_ms();
        let r = RunRecord {
            v: PROTOCOL_VERSION,
            run_id: run.clone(),
            cascade: cascade_core::spec::load_bundle(&s.main, &s.files)
                .cascade
                .map_or_else(|| s.main.clone(), |c| c.name),
            state: RunState::Queued,
            created_at: s.submitted_at,
            updated_at: now,
            owner: None,
            stages: Default::default(),
            error: None,
            cancel_requested: Some(reason.to_owned()),
            waiting: Default::default(),
            degraded: None,
        };
        if c.stores.runs.create(&r).await? == Created::Written {
            return Ok(Cancel::Requested { queued: true });
        }
    }
    Err(ClientError::CancelContended(run.clone()))
}

pub async fn results(a: ResultsArgs) -> u8 {
    let run = RunId::new(a.run.as_str());
    if let Some(out) = &a.output
        && let Err(e) = check_writable(out)
    {
        eprintln!("error: {e}");
        return EXIT_INVALID;
    }
    let swarm = match swarm::open(&a.nats).await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let record = match swarm::run_record(&swarm, &run).await {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let Some(r) = record else {
        return match swarm::submission(&swarm, &run).await {
            Ok(Some(_)) => fail(&format!(
                "run `{run}` is not finished: no coordinator has started it yet"
            )),
            Ok(None) => no_such_run(&run),
            Err(e) => fail(&e),
        };
    };
    if !r.state.is_final() {
        return fail(&format!(
            "run `{run}` is not finished: it is {}",
            state_name(r.state)
        ));
    }
    let report = match swarm::report(&swarm, &run).await {
        Ok(Some(v)) => v,
        Ok(None) => {
            return fail(&format!(
                "run `{run}` is {} but has no report in bucket `{}`",
                state_name(r.state),
                wire::BUCKET_REPORTS
            ));
        }
        Err(e) => return fail(&e),
    };
    match &a.output {
        Some(out) => {
            if let Err(e) = write_atomically(out, &report) {
                return fail(&e);
            }
            eprintln!(
                "run {run}: {}; results: {}",
                state_name(r.state),
                out.display()
            );
        }
        None => print_json(&report),
    }
    EXIT_OK
}
