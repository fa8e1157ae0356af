//! `keel-jepsen`: runs a three-node Keel cluster in network namespaces under a workload and a
//! nemesis, records the history, checks it and writes a report; or re-checks a saved history.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use keel_jepsen::{
    client::NodeClient,
    cluster::Cluster,
    history::{self, HistoryWriter},
    nemesis::{Nemesis, NemesisKind, Schedule},
    report,
    topology::Topology,
    worker::Worker,
    workload::{Workload, WorkloadConfig},
};
use tokio::sync::Mutex;

#[derive(Parser, Debug)]
#[command(about = "Fault-injection tests of a three-node Keel cluster, Jepsen style")]
struct Args {
    #[command(subcommand)]
    command: CommandArgs,
}

#[derive(Subcommand, Debug)]
enum CommandArgs {
    /// Run a cluster under load and faults, then check the history (needs root).
    Run(RunArgs),
    /// Check a saved history again; exit 1 on any violation.
    Check {
        /// A history.jsonl written by `run`.
        history: PathBuf,
    },
    /// Serve a lazyfs mount in the foreground (needs root): BACKING passed through at MOUNT,
    /// except that file data stays in this process's memory until the file is fsynced. Kill it
    /// to lose the unsynced writes (then `umount -l MOUNT`); unmount MOUNT to stop it cleanly.
    Lazyfs {
        /// The directory holding the files.
        #[arg(long)]
        backing: PathBuf,
        /// Where to mount it (an existing directory).
        #[arg(long)]
        mount: PathBuf,
        /// Pending data bound in MiB: past it, the file being written is written back.
        #[arg(long, default_value_t = keel_jepsen::lazyfs::DEFAULT_MAX_PENDING_MIB)]
        max_pending_mib: usize,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// Seconds of load and faults (the final reads come after).
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Faults: all, none, or a comma-separated list of kill, pause, partition, clock,
    /// clock-big, membership, crash-unsynced (which mounts the data dirs through lazyfs).
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Where the history, verdicts, plots and node logs go (created; must not hold a history).
    #[arg(long)]
    report: PathBuf,
    /// Seed of every random choice (ops, targets, fault order and timing); random if unset.
    #[arg(long)]
    seed: Option<u64>,
    /// The keel binary (default: `keel` next to this executable).
    #[arg(long, env = "KEEL_BIN")]
    keel: Option<PathBuf>,
    /// Client processes at once.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Workflows receiving operations at once.
    #[arg(long, default_value_t = 6)]
    active_workflows: usize,
    /// Operations per workflow before it is retired.
    #[arg(long, default_value_t = 60)]
    ops_per_workflow: u64,
    /// Shard groups of the cluster.
    #[arg(long, default_value_t = 4)]
    shards: u64,
    /// Seconds without faults between two faults (from-to).
    #[arg(long, default_value = "5-10", value_parser = parse_range)]
    calm: (u64, u64),
    /// Seconds each fault lasts (from-to).
    #[arg(long, default_value = "5-12", value_parser = parse_range)]
    hold: (u64, u64),
    /// Keep the nodes' data dirs in the report dir (removed otherwise when the run passes).
    #[arg(long)]
    keep_data: bool,
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (low, high) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?}: expected FROM-TO, e.g. 5-10"))?;
    let parse = |s: &str| s.trim().parse::<u64>().map_err(|e| format!("{s:?}: {e}"));
    let (low, high) = (parse(low)?, parse(high)?);
    if low > high {
        return Err(format!("{text:?}: FROM is above TO"));
    }
    Ok((low, high))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "keel_jepsen=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let outcome = match args.command {
        CommandArgs::Check { history } => check(&history),
        CommandArgs::Run(run_args) => run(run_args),
        CommandArgs::Lazyfs {
            backing,
            mount,
            max_pending_mib,
        } => keel_jepsen::lazyfs::serve(&backing, &mount, max_pending_mib << 20).map(|()| true),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("keel-jepsen: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn check(path: &Path) -> Result<bool> {
    let records = history::read(path)?;
    let report = keel_jepsen::checker::CheckReport::new(&records);
    println!("{report}");
    Ok(!report.any_invalid())
}

fn run(args: RunArgs) -> Result<bool> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("keel-jepsen run needs root (network namespaces, iptables)");
    }
    let seed = args.seed.unwrap_or_else(rand::random::<u64>);
    let kinds = NemesisKind::parse_list(&args.nemesis)?;
    let keel = match &args.keel {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|dir| dir.join("keel"))
            .context("locating the keel binary")?,
    };
    if !keel.exists() {
        bail!(
            "{} does not exist: build it (cargo build --workspace) or pass --keel",
            keel.display()
        );
    }
    let keel = keel.canonicalize()?;
    if args.report.join("history.jsonl").exists() {
        bail!(
            "{} already holds a history; choose a new --report dir",
            args.report.display()
        );
    }
    std::fs::create_dir_all(&args.report)?;
    let report_dir = args.report.canonicalize()?;
    let reproduce = format!(
        "keel-jepsen run --time-limit {} --nemesis {} --seed {seed} --shards {} --clients {} --calm {}-{} --hold {}-{} --report {}-rerun",
        args.time_limit,
        args.nemesis,
        args.shards,
        args.clients,
        args.calm.0,
        args.calm.1,
        args.hold.0,
        args.hold.1,
        report_dir.display()
    );
    eprintln!("keel-jepsen: seed {seed}; reproduce with: {reproduce}");

    // Members start on slots 1-3; slot 4 is free for a replacement node.
    let topology = Arc::new(Topology::create("kj", 4)?);
    topology.enter_client_namespace()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(run_in_cluster(
        &args,
        seed,
        kinds,
        &keel,
        &report_dir,
        topology.clone(),
        &reproduce,
    ));
    runtime.shutdown_timeout(Duration::from_secs(5));
    drop(topology);
    outcome
}

async fn run_in_cluster(
    args: &RunArgs,
    seed: u64,
    kinds: Vec<NemesisKind>,
    keel: &Path,
    report_dir: &Path,
    topology: Arc<Topology>,
    reproduce: &str,
) -> Result<bool> {
    let data_root = report_dir.join("data");
    std::fs::create_dir_all(&data_root)?;
    let mut cluster = Cluster::new(
        keel,
        &data_root,
        report_dir,
        args.shards,
        3,
        topology.clone(),
    );
    if kinds.contains(&NemesisKind::CrashUnsynced) {
        cluster.mount_through_lazyfs(&std::env::current_exe().context("locating keel-jepsen")?);
    }
    for id in cluster.ids() {
        cluster.start(id)?;
    }
    let nodes: Vec<NodeClient> = cluster
        .slot_addresses()
        .iter()
        .map(|a| NodeClient::new(a))
        .collect::<Result<_>>()?;
    let member_slots = cluster.member_slots.clone();
    let cluster = Arc::new(Mutex::new(cluster));
    let ready = wait_until_serving(&nodes[..3], Duration::from_secs(90)).await;
    if let Err(error) = ready {
        let tails = cluster.lock().await.log_tails(20);
        cluster.lock().await.stop_all().await;
        bail!("{error:#}\n{tails}");
    }

    let started = Instant::now();
    let history = Arc::new(HistoryWriter::create(
        &report_dir.join("history.jsonl"),
        started,
    )?);
    let worker = Worker::new(nodes.clone(), history.clone());
    let pollers = worker.spawn(2);
    let workload = Workload::new(
        WorkloadConfig {
            clients: args.clients,
            active_workflows: args.active_workflows,
            ops_per_workflow: args.ops_per_workflow,
            think_time: Duration::from_millis(100),
        },
        nodes.clone(),
        member_slots,
        history.clone(),
        seed,
    );
    let nemesis = Nemesis {
        cluster: cluster.clone(),
        topology: topology.clone(),
        history: history.clone(),
        kinds,
        schedule: Schedule {
            calm: (
                Duration::from_secs(args.calm.0),
                Duration::from_secs(args.calm.1),
            ),
            hold: (
                Duration::from_secs(args.hold.0),
                Duration::from_secs(args.hold.1),
            ),
        },
    };
    let until = started + Duration::from_secs(args.time_limit);
    let progress = tokio::spawn(report::progress(history.clone(), started));
    let (faults, ()) = tokio::join!(nemesis.run(until, seed), workload.run(until, seed));
    tracing::info!("load and faults over; healing and reading every workflow back");
    let healed = async {
        topology.heal()?;
        cluster.lock().await.restore().await
    }
    .await;
    let final_problems = workload.final_reads(Duration::from_secs(60)).await;
    progress.abort();
    for poller in pollers {
        poller.abort();
    }
    let records = history.finish()?;
    cluster.lock().await.stop_all().await;

    let checked = keel_jepsen::checker::CheckReport::new(&records);
    faults?;
    healed?;
    let passed = !checked.any_invalid();
    report::write(
        report_dir,
        &report::Summary {
            seed,
            reproduce,
            time_limit_s: args.time_limit,
            final_problems: &final_problems,
        },
        &records,
        &checked,
    )?;
    if passed && !args.keep_data {
        std::fs::remove_dir_all(&data_root).ok();
    }
    println!("{checked}");
    println!("report: {}", report_dir.display());
    if !passed {
        println!("VIOLATION: seed {seed}; reproduce with: {reproduce}");
    }
    Ok(passed)
}

/// Waits until every node answers DescribeNamespace for the workload's namespace.
async fn wait_until_serving(nodes: &[NodeClient], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for node in nodes {
        loop {
            let request =
                keel_proto::temporal::api::workflowservice::v1::DescribeNamespaceRequest {
                    namespace: keel_jepsen::client::NAMESPACE.to_string(),
                    ..Default::default()
                };
            match node.raw().describe_namespace(request).await {
                Ok(_) => break,
                Err(status) if Instant::now() > deadline => {
                    bail!(
                        "node {} did not serve within {timeout:?}: {}",
                        node.address,
                        keel_bench::connection::describe(&status)
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }
    Ok(())
}
