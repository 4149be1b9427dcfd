//! `workerpodautoscaler`: the command line.

#![forbid(unsafe_code)]

use std::fs;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use wpa::controller::{self, RunArgs, config::LogFormat};
use wpa::logging;
use wpa::queue::{Credentials, ProviderOptions, inspect};
use wpa::scaler::MaxDisruption;
use wpa::simulate::{self, SimulateOptions};

/// jemalloc rather than glibc's malloc: with thousands of WPAs the controller allocates in
/// bursts (start-up status writes, /metrics scrapes) and glibc kept what they freed, which
/// was a fifth of the resident memory at rest (BENCHMARKS.md, scenario 3).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "workerpodautoscaler",
    version,
    about = "Scales worker Deployments on the backlog of their message queues"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(Box<RunArgs>),
    /// Poll a queue with the controller's own provider code and print what it sees as JSON.
    Inspect(InspectArgs),
    /// Print the WorkerPodAutoScaler CustomResourceDefinition as YAML.
    Crd,
    /// Print the queue providers this binary knows, one JSON object per line: name,
    /// schemes, an example queueURI, the poll interval flag and its default.
    Providers,
    /// Replay a queue trace through the scaling engine and print every decision; `simulate
    /// generate` writes arrival traces and `simulate compare` compares policies on them.
    Simulate(SimulateArgs),
    /// Print the version.
    Version,
}

#[derive(Args)]
struct InspectArgs {
    /// The queueURI, as in a WPA spec; several (as in queueURIs) are polled in turn and
    /// also printed as one total.
    #[arg(value_name = "QUEUE_URI", required = true, num_args = 1..)]
    queue_uris: Vec<String>,
    /// Keep polling every SECONDS until interrupted (idle detection works over its window).
    #[arg(long, value_name = "SECONDS")]
    watch: Option<u64>,
    /// Seconds the backlog must stay empty before workers count as idle.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    idle_window: u64,
    /// Default AWS region for SQS-compatible endpoints whose URI names none.
    #[arg(long, env = "AWS_REGION")]
    aws_region: Option<String>,
    /// Username for the broker (instead of URI userinfo), from the environment only.
    #[arg(long = "username-env", hide = true, env = "WPA_QUEUE_USERNAME")]
    username: Option<String>,
    /// Password for the broker, from the environment only (never a command-line argument).
    #[arg(long = "password-env", hide = true, env = "WPA_QUEUE_PASSWORD")]
    password: Option<String>,
    /// Authorization header for the HTTP provider, from the environment only.
    #[arg(
        long = "authorization-env",
        hide = true,
        env = "WPA_QUEUE_AUTHORIZATION"
    )]
    authorization: Option<String>,
}

/// `simulate --wpa --trace` replays a queue trace (the original form, unchanged);
/// `simulate compare` and `simulate generate` are subcommands beside it.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct SimulateArgs {
    #[command(subcommand)]
    action: Option<SimulateAction>,
    /// The WorkerPodAutoScaler manifest (the file you would `kubectl create`).
    #[arg(long, value_name = "WPA.yaml", required = true)]
    wpa: Option<PathBuf>,
    /// CSV trace: t,messages[,in_flight][,sent_per_minute][,idle].
    #[arg(long, value_name = "TRACE.csv", required = true)]
    trace: Option<PathBuf>,
    /// Replicas before the first step (default: minReplicas).
    #[arg(long, value_name = "N")]
    initial_replicas: Option<i32>,
    /// Seconds a scale-down waits after the last scale activity (the controller flag).
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    scale_down_delay: u64,
    /// Default maxDisruption for WPAs that do not set one (the controller flag).
    #[arg(long, value_name = "N|P%", default_value = "100%")]
    wpa_default_max_disruption: String,
    /// Write the decisions CSV here instead of stdout.
    #[arg(long, value_name = "OUT.csv")]
    output: Option<PathBuf>,
    /// Also draw backlog and replicas over time as an SVG.
    #[arg(long, value_name = "OUT.svg")]
    plot: Option<PathBuf>,
}

#[derive(Subcommand)]
enum SimulateAction {
    /// Run an arrival trace through a simulated cluster under several policies and compare
    /// task waits and worker-seconds, beside the offline lower bound.
    Compare(Box<CompareArgs>),
    /// Write a seeded Poisson arrival trace (arrival,duration CSV).
    Generate(GenerateArgs),
}

#[derive(Args)]
struct CompareArgs {
    /// The WorkerPodAutoScaler manifest: min/max replicas, maxDisruption and the rest of the
    /// spec each practo policy uses (with its own target).
    #[arg(long, value_name = "WPA.yaml")]
    wpa: PathBuf,
    /// Arrival trace: arrival,duration (seconds), e.g. from `simulate generate`.
    #[arg(long, value_name = "TRACE.csv")]
    arrivals: PathBuf,
    /// Policies, comma-separated: practo:<targetMessagesPerWorker>, keda:<target>,
    /// maxwait:<maxWaitSeconds>, maxwait-backlog:<maxWaitSeconds> (the rule without its
    /// stream term), bound; a target may be a range (practo:1..12).
    #[arg(
        long,
        value_name = "LIST",
        default_value = "practo:2,practo:5,practo:10,keda:5,bound"
    )]
    policies: String,
    /// The wait target W in seconds: tasks over it are counted; the bound meets it.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    max_wait: f64,
    /// Seconds from a pod's creation to its worker consuming.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    startup: f64,
    /// Task slots per pod (Celery --concurrency).
    #[arg(long, value_name = "N", default_value_t = 1)]
    concurrency: u32,
    /// Celery's prefetch multiplier.
    #[arg(long, value_name = "N", default_value_t = 1)]
    prefetch: u32,
    /// When workers acknowledge a task: at its start (Celery's default) or its end.
    #[arg(long, value_name = "early|late", default_value = "late")]
    ack: String,
    /// Seconds between queue polls (the controller's poll interval; practo decides after each).
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    poll: f64,
    /// The workers send no heartbeats: practo decides on queue figures alone.
    #[arg(long)]
    no_heartbeats: bool,
    /// Ready pods at time 0.
    #[arg(long, value_name = "N", default_value_t = 0)]
    initial_replicas: i32,
    /// Stop at the latest this many seconds after the last arrival.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600.0)]
    horizon: f64,
    /// practo's --scale-down-delay-after-last-scale-activity, seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    scale_down_delay: u64,
    /// The controller's --idle-window, seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    idle_window: u64,
    /// Default maxDisruption for WPAs that do not set one (the controller flag).
    #[arg(long, value_name = "N|P%", default_value = "100%")]
    wpa_default_max_disruption: String,
    /// Write the table here instead of stdout.
    #[arg(long, value_name = "OUT.md")]
    output: Option<PathBuf>,
    /// Also draw waits and replicas over time as an SVG.
    #[arg(long, value_name = "OUT.svg")]
    plot: Option<PathBuf>,
    /// Also write every task of every run as CSV (policy,task,arrival,duration,start,wait,pod).
    #[arg(long, value_name = "OUT.csv")]
    tasks: Option<PathBuf>,
}

#[derive(Args)]
struct GenerateArgs {
    /// Poisson phases RATE:SECONDS (tasks per second), or FROM..TO:SECONDS for a linear ramp.
    #[arg(long, value_name = "LIST")]
    phases: String,
    /// Task durations in seconds, uniform MIN..MAX (or one value).
    #[arg(long, value_name = "MIN..MAX")]
    durations: String,
    /// Bursts AT:COUNT: COUNT tasks queued at once at AT seconds.
    #[arg(long, value_name = "LIST", default_value = "")]
    bursts: String,
    /// The seed: the same seed gives the same trace.
    #[arg(long, value_name = "N")]
    seed: u64,
    /// Write the trace here instead of stdout.
    #[arg(long, value_name = "OUT.csv")]
    output: Option<PathBuf>,
}

fn main() -> ExitCode {
    // Two TLS stacks are linked (kube and the AWS SDK); pick one process-wide provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => return run_controller(*args),
        Command::Inspect(args) => return run_inspect(args),
        Command::Crd => print_crd(),
        Command::Providers => print_providers(),
        Command::Simulate(args) => run_simulate(args),
        Command::Version => {
            println!("workerpodautoscaler {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Colour codes only for a person at a terminal: in a file or a log collector they are
/// noise. `NO_COLOR` (any value) turns them off everywhere.
fn colour_for(stream: &impl IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn run_controller(args: RunArgs) -> ExitCode {
    let filter = logging::filter(&args.log_level, "info");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_for(&io::stdout()));
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    let outcome = runtime().and_then(|rt| {
        rt.block_on(controller::run(args))
            .map_err(|e| e.to_string())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn run_inspect(args: InspectArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(logging::filter("warn", "warn"))
        .with_writer(io::stderr)
        .with_ansi(colour_for(&io::stderr()))
        .init();
    let options = ProviderOptions {
        aws_region: args.aws_region.clone(),
        idle_window: Duration::from_secs(args.idle_window),
        ..ProviderOptions::default()
    };
    let credentials = Credentials {
        username: args.username.clone(),
        password: args.password.clone(),
        authorization: args.authorization.clone(),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let watch = args.watch.map(|s| Duration::from_secs(s.max(1)));
    let outcome = rt.block_on(async {
        let mut stdout = io::stdout();
        tokio::select! {
            result = inspect::inspect(&args.queue_uris, watch, credentials, options, &mut stdout) => result.map_err(Some),
            _ = tokio::signal::ctrl_c() => Err(None),
        }
    });
    match outcome {
        Ok(()) | Err(None) => ExitCode::SUCCESS,
        Err(Some(error)) => {
            eprintln!("error: {error}");
            ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(1))
        }
    }
}

fn print_crd() -> Result<(), String> {
    let yaml = wpa::crd::crd_yaml().map_err(|e| format!("cannot render the CRD: {e}"))?;
    io::stdout()
        .write_all(yaml.as_bytes())
        .map_err(|e| e.to_string())
}

fn print_providers() -> Result<(), String> {
    let mut out = io::stdout().lock();
    for provider in wpa::queue::kinds::describe() {
        let line = serde_json::to_string(&provider).map_err(|e| e.to_string())?;
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn read_wpa(path: &std::path::Path) -> Result<wpa::crd::WorkerPodAutoScaler, String> {
    let manifest =
        fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    simulate::load_wpa(&manifest).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `path`, or to stdout without one.
fn write_out(path: Option<&std::path::Path>, bytes: &[u8]) -> Result<(), String> {
    match path {
        Some(path) => {
            fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        None => io::stdout().write_all(bytes).map_err(|e| e.to_string()),
    }
}

fn run_simulate(args: SimulateArgs) -> Result<(), String> {
    let (wpa_path, trace_path) = match (args.action, args.wpa, args.trace) {
        (Some(SimulateAction::Compare(compare)), _, _) => return run_compare(*compare),
        (Some(SimulateAction::Generate(generate)), _, _) => return run_generate(generate),
        (None, Some(wpa), Some(trace)) => (wpa, trace),
        // clap requires both without a subcommand.
        (None, _, _) => return Err("simulate needs --wpa and --trace".to_string()),
    };
    let wpa = read_wpa(&wpa_path)?;
    let trace_file = fs::File::open(&trace_path)
        .map_err(|e| format!("cannot read {}: {e}", trace_path.display()))?;
    let rows = simulate::trace::read_trace(io::BufReader::new(trace_file))
        .map_err(|e| format!("{}: {e}", trace_path.display()))?;
    let default_max_disruption: MaxDisruption = args
        .wpa_default_max_disruption
        .parse()
        .map_err(|e| format!("--wpa-default-max-disruption: {e}"))?;
    let options = SimulateOptions {
        initial_replicas: args.initial_replicas,
        scale_down_delay: Duration::from_secs(args.scale_down_delay),
        default_max_disruption,
    };
    let steps = simulate::simulate(&wpa, &rows, &options).map_err(|e| e.to_string())?;

    // Render everything in memory first so an error leaves no partial output behind.
    let mut csv = Vec::new();
    simulate::write_csv(&steps, &mut csv).map_err(|e| e.to_string())?;
    if let Some(plot) = &args.plot {
        let title = format!(
            "{} ({}..{} replicas, {} msgs/worker)",
            wpa.metadata.name.as_deref().unwrap_or("wpa"),
            wpa.spec.min_replicas,
            wpa.spec.max_replicas,
            wpa.spec.target_messages_per_worker
        );
        simulate::plot::write_svg(
            plot,
            &title,
            &simulate::plot_points(&steps),
            wpa.spec.min_replicas,
            wpa.spec.max_replicas,
        )
        .map_err(|e| e.to_string())?;
    }
    write_out(args.output.as_deref(), &csv)
}

fn run_compare(args: CompareArgs) -> Result<(), String> {
    use simulate::cluster::{Ack, ClusterConfig};
    use simulate::compare::{self, CompareOptions};
    use simulate::policies::Choice;

    let wpa = read_wpa(&args.wpa)?;
    let file = fs::File::open(&args.arrivals)
        .map_err(|e| format!("cannot read {}: {e}", args.arrivals.display()))?;
    let tasks = simulate::arrivals::read_arrivals(io::BufReader::new(file))
        .map_err(|e| format!("{}: {e}", args.arrivals.display()))?;
    let choices = Choice::parse_list(&args.policies).map_err(|e| e.to_string())?;
    let ack: Ack = args.ack.parse().map_err(|e| format!("--ack: {e}"))?;
    let default_max_disruption: MaxDisruption = args
        .wpa_default_max_disruption
        .parse()
        .map_err(|e| format!("--wpa-default-max-disruption: {e}"))?;
    let options = CompareOptions {
        cluster: ClusterConfig {
            startup: args.startup,
            concurrency: args.concurrency,
            prefetch: args.prefetch,
            ack,
            poll: args.poll,
            heartbeat: (!args.no_heartbeats).then_some(2.0),
            initial_replicas: args.initial_replicas,
            horizon: args.horizon,
        },
        max_wait: args.max_wait,
        settings: wpa::scaler::ScalerSettings {
            default_max_disruption,
            scale_down_delay: Duration::from_secs(args.scale_down_delay),
        },
        idle_window: args.idle_window as f64,
    };
    let comparison =
        compare::compare(&wpa, &tasks, &choices, &options).map_err(|e| e.to_string())?;
    let mut table = Vec::new();
    compare::write_table(&comparison, &mut table).map_err(|e| e.to_string())?;
    if let Some(path) = &args.tasks {
        let mut csv = Vec::new();
        compare::write_tasks(&comparison, &mut csv).map_err(|e| e.to_string())?;
        write_out(Some(path), &csv)?;
    }
    if let Some(plot) = &args.plot {
        let title = format!(
            "{}: {} tasks, start-up {} s, W = {} s",
            args.arrivals
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            comparison.tasks,
            args.startup,
            args.max_wait
        );
        let schedule = comparison.bound.as_ref().map(|b| b.schedule.replicas());
        simulate::compare_plot::write_compare_svg(
            plot,
            &title,
            &comparison.runs,
            schedule.as_deref(),
            args.max_wait,
        )
        .map_err(|e| e.to_string())?;
    }
    write_out(args.output.as_deref(), &table)
}

fn run_generate(args: GenerateArgs) -> Result<(), String> {
    use simulate::generate::{self, GenerateSpec};

    let spec = GenerateSpec {
        phases: generate::parse_phases(&args.phases).map_err(|e| e.to_string())?,
        durations: generate::parse_durations(&args.durations).map_err(|e| e.to_string())?,
        bursts: generate::parse_bursts(&args.bursts).map_err(|e| e.to_string())?,
        seed: args.seed,
    };
    let tasks = generate::generate(&spec).map_err(|e| e.to_string())?;
    let mut command = format!(
        "workerpodautoscaler simulate generate --phases {} --durations {}",
        args.phases, args.durations
    );
    if !args.bursts.is_empty() {
        command.push_str(&format!(" --bursts {}", args.bursts));
    }
    command.push_str(&format!(" --seed {}", args.seed));
    let work: f64 = tasks.iter().map(|t| t.duration).sum();
    let comments = [
        command,
        format!("{} tasks, {work:.0} task-seconds", tasks.len()),
    ];
    let mut csv = Vec::new();
    simulate::arrivals::write_arrivals(&tasks, &comments, &mut csv).map_err(|e| e.to_string())?;
    write_out(args.output.as_deref(), &csv)
}
