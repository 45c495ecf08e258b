//! `coordinator submit`: validate a cascade here, send it to the swarm as a
//! bundle of its files, and optionally follow it to its results.
//!
//! Order of writes, so a retry after a crash at any point is safe:
//! 1. idempotency key -> run id (`create`: the first submitter wins; a
//!    second one adopts the recorded run id);
//! 2. the submission into `cascade-submissions` (`create`);
//! 3. the submission onto `cascade.submit`, `Nats-Msg-Id` = run id (the
//!    stream drops a duplicate within its window), awaiting the ack.
//!
//! A second submitter with the same key finds the submission already in the
//! bucket and publishes nothing; if the first died between 1 and 3 the
//! second completes the publish under the same run id.

use std::path::PathBuf;

use cascade_proto::wire::{self, Submission};
use cascade_proto::{PROTOCOL_VERSION, RunId};
use cascade_swarm::NatsArgs;
use cascade_swarm::store::{KeyClaim, StoreError};
use clap::Args;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::args::{InputArgs, SourceArgs};
use super::swarm::{self, Client, ClientError, StageChanges, Status};
use super::{
    EXIT_INVALID, EXIT_OK, EXIT_RUN_FAILED, check_writable, final_stages, inputs, prepare,
    print_answer, progress, usage_error, write_atomically,
};
use cascade_core::spec::{collect_bundle, load_bundle};

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The cascade file (YAML or JSON); its sub-cascades are sent with it.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub inputs: InputArgs,
    /// Follow the run until it ends, print its results like `run` and exit
    /// like `run` (0 success, 1 failed or partial).
    #[arg(long, env = "CASCADE_WAIT")]
    pub wait: bool,
    /// With --wait: write the results (the same JSON as `run --output`).
    #[arg(
        long,
        short = 'o',
        value_name = "FILE",
        env = "CASCADE_OUTPUT",
        requires = "wait"
    )]
    pub output: Option<PathBuf>,
    /// Submitting twice with the same key gives one run: the second prints
    /// the first's run id and publishes nothing.
    #[arg(long, value_name = "KEY", env = "CASCADE_IDEMPOTENCY_KEY")]
    pub idempotency_key: Option<String>,
    /// With --wait: show progress and warnings even when stderr is not a
    /// terminal.
    #[arg(long)]
    pub verbose: bool,
    /// Print JSON on stdout: `{"run_id", "duplicate"}`, or with --wait
    /// the whole report.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

pub async fn submit(a: SubmitArgs, cancel: CancellationToken) -> u8 {
    let inputs = match inputs::collect(&a.inputs) {
        Ok(i) => i,
        Err(e) => return usage_error(&e),
    };
    // The same checks and messages as `validate` (and, as for `run`, the
    // required inputs are checked: a run is about to start).
    let p = prepare(
        &a.file,
        &a.source,
        Some(&inputs),
        !a.source.skills_dir.is_empty(),
    );
    if p.has_errors() {
        p.print_diagnostics(false);
        eprintln!(
            "{}: not submitted: the cascade has errors",
            a.file.display()
        );
        return EXIT_INVALID;
    }
    if a.verbose {
        p.print_diagnostics(false);
    }
    let leaves = p.plan.as_ref().map(final_stages).unwrap_or_default();
    let (main, files) = match collect_bundle(&a.file) {
        Ok(b) => b,
        Err(loaded) => {
            for line in loaded.render_diagnostics() {
                eprintln!("{line}");
            }
            eprintln!("{}: not submitted", a.file.display());
            return EXIT_INVALID;
        }
    };
    // What the coordinator will load must be what was validated.
    let check = load_bundle(&main, &files);
    if check.has_errors() {
        for line in check.render_diagnostics() {
            eprintln!("{line}");
        }
        eprintln!(
            "{}: not submitted: the bundle does not load",
            a.file.display()
        );
        return EXIT_INVALID;
    }
    if let Some(out) = &a.output
        && let Err(e) = check_writable(out)
    {
        return usage_error(&e);
    }
    let swarm = match swarm::open(&a.nats).await {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let mut submission = Submission {
        v: PROTOCOL_VERSION,
        run_id: RunId::new(uuid::Uuid::now_v7().to_string()),
        idempotency_key: a.idempotency_key.clone(),
        main,
        files,
        inputs,
        submitted_at: cascade_swarm::clock::now_ms(),
        submitted_by: submitted_by(),
    };
    let duplicate = match send(&swarm, &mut submission).await {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    let run = submission.run_id.clone();
    if duplicate {
        eprintln!(
            "idempotency key `{}` was already submitted: run {run}",
            a.idempotency_key.as_deref().unwrap_or_default()
        );
    }
    if !a.wait {
        if a.json {
            println!(
                "{}",
                json!({"run_id": run.as_str(), "duplicate": duplicate})
            );
        } else {
            println!("{run}");
        }
        return EXIT_OK;
    }
    eprintln!("submitted run {run}");
    wait(&swarm, &run, &a, &leaves, &cancel).await
}

/// Why a submission was not sent.
#[derive(Debug, thiserror::Error)]
pub(super) enum SubmitError {
    #[error("idempotency key `{key}`: {source}")]
    Idempotency {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("idempotency key `{0}`: the value in bucket `{bucket}` is not a run id", bucket = wire::BUCKET_IDEMPOTENCY)]
    NotARunId(String),
    #[error(
        "run `{run}`: the submission is {size} bytes, over the server's max payload of {max} bytes \
         (large data belongs in inputs files the skills read, not in the cascade)"
    )]
    TooLarge { run: RunId, size: usize, max: usize },
    #[error("run `{run}`: {source}")]
    Send {
        run: RunId,
        #[source]
        source: StoreError,
    },
    #[error("run `{run}`: cannot watch bucket `{bucket}`: {source}", bucket = wire::BUCKET_REPORTS)]
    WatchReports {
        run: RunId,
        #[source]
        source: StoreError,
    },
    #[error("interrupted: run `{0}` ended but its report has not arrived")]
    ReportInterrupted(RunId),
    #[error("run `{0}`: no report in bucket `{bucket}`", bucket = wire::BUCKET_REPORTS)]
    NoReport(RunId),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Records and publishes `s`; returns whether its idempotency key had
/// already been used (`s.run_id` is then the earlier run's).
pub(super) async fn send(swarm: &Client, s: &mut Submission) -> Result<bool, SubmitError> {
    let mut duplicate = false;
    if let Some(key) = &s.idempotency_key {
        let claim = swarm
            .stores
            .submissions
            .claim_key(key, &s.run_id)
            .await
            .map_err(|source| SubmitError::Idempotency {
                key: key.clone(),
                source,
            })?;
        match claim {
            KeyClaim::Claimed => {}
            KeyClaim::NotARunId => return Err(SubmitError::NotARunId(key.clone())),
            KeyClaim::Taken(id) => {
                s.run_id = id;
                duplicate = true;
                // Published already, unless its submitter died half-way.
                if swarm::submission(swarm, &s.run_id).await?.is_some() {
                    return Ok(true);
                }
            }
        }
    }
    let run = s.run_id.clone();
    match swarm.stores.submissions.send(s).await {
        Ok(()) => Ok(duplicate),
        Err(StoreError::TooLarge { size, limit, .. }) => Err(SubmitError::TooLarge {
            run,
            size,
            max: limit,
        }),
        Err(source) => Err(SubmitError::Send { run, source }),
    }
}

/// Follows the run to its end, then prints and writes its report as `run`
/// does.
async fn wait(
    swarm: &Client,
    run: &RunId,
    a: &SubmitArgs,
    leaves: &[String],
    cancel: &CancellationToken,
) -> u8 {
    let show = a.verbose || std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = progress::Progress::new(show);
    let mut changes = StageChanges::default();
    let mut waits = swarm::WaitingChanges::default();
    let followed = swarm::follow(swarm, run, cancel, |r| {
        for (stage, status) in changes.diff(r) {
            match status {
                Status::Known(s) => progress.stage(&stage, s),
                Status::Other(_) => {}
            }
        }
        // Said whatever `show` is: without it the wait looks like a hang.
        for (stage, why) in waits.diff(r) {
            eprintln!("{}", swarm::waiting_text(&stage, &why));
        }
        if let Some(change) = waits.degraded(r) {
            eprintln!("{}", change.text());
        }
    })
    .await;
    let record = match followed {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let report = match await_report(swarm, run, cancel).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(err) = &record.error {
                eprintln!("run {run}: {:?}: {err}", record.state);
            }
            return fail(&e);
        }
    };
    if let Some(out) = &a.output
        && let Err(e) = write_atomically(out, &report)
    {
        return fail(&e);
    }
    progress.finished(&report, a.output.as_deref());
    print_answer(&report, leaves, a.json)
}

/// The report of a run whose record is final. The driver writes it before
/// the final record; should it lag, wait for it on a watch.
async fn await_report(
    swarm: &Client,
    run: &RunId,
    cancel: &CancellationToken,
) -> Result<Value, SubmitError> {
    use futures::StreamExt;
    let mut watch =
        swarm
            .stores
            .reports
            .watch(run)
            .await
            .map_err(|source| SubmitError::WatchReports {
                run: run.clone(),
                source,
            })?;
    loop {
        if let Some(r) = swarm::report(swarm, run).await? {
            return Ok(r);
        }
        tokio::select! {
            () = cancel.cancelled() => return Err(SubmitError::ReportInterrupted(run.clone())),
            next = watch.next() => match next {
                None => return Err(SubmitError::NoReport(run.clone())),
                Some(Ok(report)) => return Ok(report),
                // Read again: the error is the read's to report.
                Some(Err(_)) => {}
            },
        }
    }
}

pub(super) fn submitted_by() -> String {
    let user = std::env::var("USER").unwrap_or_default();
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    match (user.is_empty(), host.is_empty()) {
        (false, false) => format!("{user}@{host}"),
        (false, true) => user,
        _ => String::new(),
    }
}

fn fail(e: &dyn std::fmt::Display) -> u8 {
    eprintln!("error: {e}");
    EXIT_RUN_FAILED
}
