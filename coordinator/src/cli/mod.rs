//! The `coordinator` command line: argument types and the commands.
//!
//! Exit codes: 0 success; 1 the run failed or was partial; 2 invalid input
//! (a bad file, flag or input value). Data goes to stdout, diagnostics and
//! progress to stderr.

mod args;
mod command;
mod dlq;
mod doctor;
mod inputs;
mod permissions;
mod progress;
mod runs;
pub mod serve;
mod submit;
pub(crate) mod swarm;
mod workers;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cascade_core::models::ModelCatalog;
use cascade_exec::{Executor, SkillRegistry};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

pub use args::{PlanArgs, RunArgs, SourceArgs, ValidateArgs};
pub use command::{Cli, Command};

use crate::driver::local::run_local_with;
use crate::driver::{FileMemoryStore, LocalOptions};
use crate::integrations::{Env, RunIntegrations, RunSetup};
use cascade_core::plan::{self, Plan, PlanOptions};
use cascade_core::spec::{Diagnostic, Loaded, load_file};

pub const EXIT_OK: u8 = 0;
pub const EXIT_RUN_FAILED: u8 = 1;
pub const EXIT_INVALID: u8 = 2;

/// Runs one command; returns the process exit code.
pub async fn run(cli: Cli, cancel: CancellationToken) -> u8 {
    match cli.command {
        Command::Validate(a) => validate(a),
        Command::Plan(a) => plan_cmd(a),
        Command::Run(a) => run_cmd(a, cancel).await,
        Command::Submit(a) => submit::submit(a, cancel).await,
        Command::Status(a) => runs::status(a).await,
        Command::Watch(a) => runs::watch(a, cancel).await,
        Command::Cancel(a) => runs::cancel(a).await,
        Command::Results(a) => runs::results(a).await,
        Command::Workers(a) => workers::workers(a).await,
        Command::Dlq(a) => dlq::dlq(a).await,
        Command::Doctor(a) => doctor::doctor(a).await,
        Command::Serve(a) => serve::serve_cmd(a, cancel).await,
        Command::Permissions(a) => permissions::permissions_cmd(&a),
        Command::Schema(a) => schema_cmd(&a),
        Command::Completions(a) => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(a.shell, &mut cmd, "coordinator", &mut std::io::stdout());
            EXIT_OK
        }
    }
}

/// A cascade loaded, its skills found and its plan compiled, with every
/// diagnostic collected on the way.
struct Prepared {
    loaded: Loaded,
    plan: Option<Plan>,
    registry: Option<SkillRegistry>,
    diagnostics: Vec<Diagnostic>,
}

impl Prepared {
    fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    fn print_diagnostics(&self, errors_only: bool) {
        let mut err = std::io::stderr().lock();
        for d in &self.diagnostics {
            if errors_only && !d.is_error() {
                continue;
            }
            let src = d
                .loc
                .as_ref()
                .and_then(|l| self.loaded.sources.get(&*l.file));
            let _ = writeln!(err, "{}", d.render(src.map(String::as_str)));
        }
    }
}

/// `skills/` beside the cascade file (when it exists) and every
/// `--skills-dir`, each once.
fn skill_dirs(file: &Path, explicit: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut seen = BTreeSet::new();
    let beside = file
        .parent()
        .map(|d| d.join("skills"))
        .filter(|d| d.is_dir());
    for d in beside.iter().chain(explicit.iter()) {
        let key = d.canonicalize().unwrap_or_else(|_| d.clone());
        if seen.insert(key) {
            out.push(d.clone());
        }
    }
    out
}

fn prepare(
    file: &Path,
    src: &SourceArgs,
    inputs: Option<&Map<String, Value>>,
    need_skills: bool,
) -> Prepared {
    let loaded = load_file(file);
    let mut diagnostics = loaded.diagnostics.clone();
    let dirs = skill_dirs(file, &src.skills_dir);
    let check_skills = need_skills || !dirs.is_empty();
    let registry = if check_skills {
        match SkillRegistry::load(&dirs) {
            Ok(r) => Some(r),
            Err(errors) => {
                diagnostics.extend(
                    errors
                        .into_iter()
                        .map(|e| Diagnostic::error(None, "", format!("skill file: {e}"))),
                );
                None
            }
        }
    } else {
        None
    };
    let models = match ModelCatalog::from_env_or(src.models.as_deref()) {
        Ok(m) => Arc::new(m),
        Err(errors) => {
            diagnostics.extend(
                errors
                    .into_iter()
                    .map(|e| Diagnostic::error(None, "", format!("models file: {e}"))),
            );
            Arc::new(ModelCatalog::builtin())
        }
    };
    let plan = loaded.cascade.as_ref().map(|c| {
        let opts = PlanOptions {
            skills: if check_skills {
                Some(
                    registry
                        .as_ref()
                        .map(|r| r.names().map(str::to_owned).collect())
                        .unwrap_or_default(),
                )
            } else {
                None
            },
            inputs: inputs.cloned(),
            models: Some(models.clone()),
            model_skills: registry
                .as_ref()
                .map(|r| {
                    r.names()
                        .filter(|n| {
                            r.get(n).is_some_and(|s| {
                                matches!(s.kind, cascade_exec::SkillKind::Model(_))
                            })
                        })
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        };
        plan::compile(c, &opts)
    });
    // A failed skill load would make every skill look unknown: keep only
    // the load errors then.
    if let Some(p) = &plan {
        let skip_unknown_skills = check_skills && registry.is_none();
        diagnostics.extend(
            p.diagnostics
                .iter()
                .filter(|d| !(skip_unknown_skills && d.message.starts_with("unknown skill")))
                .cloned(),
        );
    }
    // Reading order: by file, then line and column; file-less ones first.
    diagnostics.sort_by(|a, b| {
        let key = |d: &Diagnostic| d.loc.as_ref().map(|l| (l.file.to_string(), l.line, l.col));
        key(a).cmp(&key(b))
    });
    Prepared {
        loaded,
        plan,
        registry,
        diagnostics,
    }
}

fn validate(a: ValidateArgs) -> u8 {
    let inputs = match inputs::collect(&a.inputs) {
        Ok(i) => i,
        Err(e) => return usage_error(&e),
    };
    let given = (!a.inputs.input.is_empty() || a.inputs.inputs_file.is_some()).then_some(&inputs);
    let mut any_error = false;
    let mut reports = Vec::new();
    for file in &a.files {
        let p = prepare(file, &a.source, given, !a.source.skills_dir.is_empty());
        any_error |= p.has_errors();
        let errors = p.diagnostics.iter().filter(|d| d.is_error()).count();
        let warnings = p.diagnostics.len() - errors;
        if a.json {
            reports.push(json!({"file": file.display().to_string(), "valid": errors == 0, "errors": errors, "warnings": warnings, "diagnostics": p.diagnostics}));
        } else {
            p.print_diagnostics(false);
            let stages = p.plan.as_ref().map_or(0, |pl| pl.nodes.len());
            if errors == 0 {
                eprintln!(
                    "{}: valid ({stages} stages, {warnings} warning{})",
                    file.display(),
                    plural(warnings)
                );
            } else {
                eprintln!(
                    "{}: {errors} error{}, {warnings} warning{}",
                    file.display(),
                    plural(errors),
                    plural(warnings)
                );
            }
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"valid": !any_error, "files": reports}))
                .unwrap_or_default()
        );
    }
    if any_error { EXIT_INVALID } else { EXIT_OK }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn usage_error(msg: &dyn std::fmt::Display) -> u8 {
    eprintln!("error: {msg}");
    EXIT_INVALID
}

fn plan_cmd(a: PlanArgs) -> u8 {
    let inputs = match inputs::collect(&a.inputs) {
        Ok(i) => i,
        Err(e) => return usage_error(&e),
    };
    let given = (!a.inputs.input.is_empty() || a.inputs.inputs_file.is_some()).then_some(&inputs);
    let p = prepare(&a.file, &a.source, given, !a.source.skills_dir.is_empty());
    if p.has_errors() {
        p.print_diagnostics(false);
        return EXIT_INVALID;
    }
    let Some(mut plan) = p.plan else {
        return EXIT_INVALID;
    };
    // Inputs known now let auto-select resolve templated routing flags.
    if given.is_some() {
        resolve_known_inputs(&mut plan, &inputs);
    }
    print!("{}", plan::render(&plan, a.format));
    EXIT_OK
}

/// Substitutes `${inputs.X}` routing flags with the given values so the
/// plan can show the model auto-select will pick.
fn resolve_known_inputs(plan: &mut Plan, inputs: &Map<String, Value>) {
    let ctx = cascade_eval::Context::new(Value::Object(inputs.clone()), json!({}), json!({}));
    for node in &mut plan.nodes {
        for (_, v) in node.inputs.iter_mut() {
            if let Ok(r) = cascade_eval::render_value(v, &ctx) {
                *v = r;
            }
        }
    }
}

async fn run_cmd(a: RunArgs, cancel: CancellationToken) -> u8 {
    let inputs = match inputs::collect(&a.inputs) {
        Ok(i) => i,
        Err(e) => return usage_error(&e),
    };
    let p = prepare(&a.file, &a.source, Some(&inputs), true);
    if p.has_errors() {
        p.print_diagnostics(false);
        eprintln!("{}: not run: the cascade has errors", a.file.display());
        return EXIT_INVALID;
    }
    if a.verbose {
        p.print_diagnostics(false);
    }
    let (Some(plan), Some(registry)) = (p.plan, p.registry) else {
        return EXIT_INVALID;
    };
    if let Some(out) = &a.output
        && let Err(e) = check_writable(out)
    {
        return usage_error(&e);
    }
    let data_dir = a.data_dir.clone().unwrap_or_else(default_data_dir);
    let run_id = cascade_proto::RunId::new(uuid::Uuid::now_v7().to_string());
    let client = cascade_exec::model::ModelClient::new(plan.models.clone());
    let executor = Executor::new(Arc::new(registry), "local").with_models(client);
    let plan = Arc::new(plan);
    let ops = integrations_of(&p.loaded, &plan, &run_id, &inputs);
    let executor = Arc::new(executor);
    let opts = LocalOptions {
        run_id: run_id.clone(),
        inputs,
        concurrency: a
            .concurrency
            .map_or_else(default_concurrency, |c| c as usize),
        store: Arc::new(FileMemoryStore::new(&data_dir)),
    };
    let leaves = final_stages(&plan);
    let show = a.verbose || std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = progress::Progress::new(show);
    progress.started(&plan.name, run_id.as_str());
    let value = run_local_with(plan, executor, opts, ops, cancel, |fx, engine| {
        progress.effect(fx, engine)
    })
    .await;
    if let Some(out) = &a.output
        && let Err(e) = write_atomically(out, &value)
    {
        eprintln!("error: {e}");
        return EXIT_RUN_FAILED;
    }
    progress.finished(&value, a.output.as_deref());
    print_answer(&value, &leaves, a.json)
}

/// The cascade's GitHub, notifications, gates and hooks for this run;
/// `on_run_end` hooks run in the cascade's directory.
fn integrations_of(
    loaded: &Loaded,
    plan: &Arc<Plan>,
    run_id: &cascade_proto::RunId,
    inputs: &Map<String, Value>,
) -> RunIntegrations {
    let (operations, dir) = loaded
        .cascade
        .as_ref()
        .map_or_else(Default::default, |c| (c.operations.clone(), c.dir.clone()));
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    RunIntegrations::new(
        plan.clone(),
        RunSetup {
            operations,
            run_id: run_id.clone(),
            inputs: inputs.clone(),
            dir,
            env: Env::process(),
            // The user's own file, run here.
            commands: true,
        },
    )
}

/// Prints a finished run's answer on stdout (the whole report with
/// `--json`, else what the final stages produced; the whole report is in
/// `--output`) and returns the exit code its status calls for.
fn print_answer(report: &Value, leaves: &[String], json: bool) -> u8 {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        let outputs: Map<String, Value> = leaves
            .iter()
            .filter_map(|id| {
                let out = report.get("stages")?.get(id)?.get("output")?;
                (!out.is_null()).then(|| (id.clone(), out.clone()))
            })
            .collect();
        if !outputs.is_empty() {
            println!(
                "{}",
                serde_json::to_string_pretty(&outputs).unwrap_or_default()
            );
        }
    }
    if report.get("status").and_then(Value::as_str) == Some("success") {
        EXIT_OK
    } else {
        EXIT_RUN_FAILED
    }
}

/// Top-level stages no other stage depends on: where a run's result is.
fn final_stages(plan: &Plan) -> Vec<String> {
    let root = &plan.blocks[plan.root].nodes;
    root.iter()
        .filter(|&&n| !root.iter().any(|&m| plan.nodes[m].deps.contains(&n)))
        .map(|&n| plan.nodes[n].id.clone())
        .collect()
}

fn default_concurrency() -> usize {
    std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .max(4)
}

fn default_data_dir() -> PathBuf {
    dirs::data_dir().map_or_else(|| PathBuf::from(".cascade"), |d| d.join("cascade"))
}

/// Why a results file cannot be written.
#[derive(Debug, thiserror::Error)]
enum ResultsFileError {
    #[error("cannot write results to `{}`: directory `{}` does not exist", .path.display(), .dir.display())]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("cannot write results to `{}`: it is a directory", .0.display())]
    IsDirectory(PathBuf),
    #[error("cannot encode the results: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot write `{}`: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn check_writable(path: &Path) -> Result<(), ResultsFileError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(ResultsFileError::NoDirectory {
            path: path.to_owned(),
            dir: dir.to_owned(),
        });
    }
    if path.is_dir() {
        return Err(ResultsFileError::IsDirectory(path.to_owned()));
    }
    Ok(())
}

/// Writes JSON through a temporary file and a rename, so a crash never
/// leaves half a results file.
fn write_atomically(path: &Path, value: &Value) -> Result<(), ResultsFileError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let text = serde_json::to_string_pretty(value)? + "\n";
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ResultsFileError::Write { path, source }
    };
    std::fs::write(&tmp, text).map_err(write_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(write_err(path))
}

fn schema_cmd(a: &args::SchemaArgs) -> u8 {
    let schema = cascade_core::spec::schema::cascade_schema();
    let text = match serde_json::to_string_pretty(&schema) {
        Ok(t) => t + "\n",
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_RUN_FAILED;
        }
    };
    match &a.output {
        Some(path) => match std::fs::write(path, text) {
            Ok(()) => EXIT_OK,
            Err(e) => usage_error(&format!("cannot write `{}`: {e}", path.display())),
        },
        None => {
            print!("{text}");
            EXIT_OK
        }
    }
}
