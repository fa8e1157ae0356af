//! Three `keel node` processes: one is killed with SIGKILL while clients keep writing through
//! the debug KV RPC, and every acknowledged write is read back afterwards. Also the start-up
//! refusals a user sees: a damaged data dir, another cluster's data dir, a peer of another
//! cluster. Reproduce with `cargo test --workspace --test process_cluster -- --test-threads=1`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_tests::process::{free_port, KeelProcess, KvClient};

const SHARDS: u64 = 8;

struct Cluster {
    nodes: Vec<KeelProcess>,
    addrs: Vec<String>,
    _root: tempfile::TempDir,
}

fn cluster(cluster_id: &str) -> anyhow::Result<Cluster> {
    let root = tempfile::tempdir()?;
    let addrs: Vec<String> = (0..3)
        .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
        .collect::<Result<_, _>>()?;
    let peers = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let nodes = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| KeelProcess::new(i as u64 + 1, a, cluster_id, &peers, root.path(), SHARDS))
        .collect();
    Ok(Cluster {
        nodes,
        addrs,
        _root: root,
    })
}

fn logs(nodes: &[KeelProcess]) -> String {
    nodes
        .iter()
        .map(|n| format!("--- node {} stderr ---\n{}", n.id, n.log_text()))
        .collect()
}

/// Retries one put until it is acknowledged or `within` passes.
async fn put_until_acked(
    client: &mut KvClient,
    group: u64,
    key: &[u8],
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        match client.put_once(group, key, key).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_of_a_node() -> anyhow::Result<()> {
    let mut cluster = cluster("sigkill-test")?;
    for node in &mut cluster.nodes {
        node.start()?;
    }
    let mut probe = KvClient::new(cluster.addrs.clone());
    for group in 0..=SHARDS {
        if let Err(e) = put_until_acked(&mut probe, group, b"ready", Duration::from_secs(30)).await
        {
            panic!(
                "cluster did not become writable: {e}\n{}",
                logs(&cluster.nodes)
            );
        }
    }

    let acked: Arc<Mutex<BTreeSet<(u64, u64, u64)>>> = Default::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..4u64 {
        let acked = acked.clone();
        let stop = stop.clone();
        let mut client = KvClient::new(cluster.addrs.clone());
        writers.push(tokio::spawn(async move {
            let mut seq = 0u64;
            let mut unknown = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let group = (writer + seq) % (SHARDS + 1);
                let key = format!("w{writer}-{seq}");
                match client.put_once(group, key.as_bytes(), key.as_bytes()).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert((writer, seq, group));
                    }
                    Err(_) => {
                        unknown += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                seq += 1;
            }
            unknown
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_kill = acked.lock().unwrap().len();
    cluster.nodes[1].kill9().await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut unknown = 0;
    for writer in writers {
        unknown += writer.await?;
    }
    let acked = acked.lock().unwrap().clone();
    let after_kill = acked.len() - before_kill;
    println!("acknowledged {before_kill} writes before SIGKILL, {after_kill} after; {unknown} unknown outcomes");
    assert!(
        before_kill > 0 && after_kill > 0,
        "writes did not progress on both sides of the kill\n{}",
        logs(&cluster.nodes)
    );

    let mut reader = KvClient::new(cluster.addrs.clone());
    for (writer, seq, group) in &acked {
        let key = format!("w{writer}-{seq}");
        let value = reader
            .get(*group, key.as_bytes(), Duration::from_secs(20))
            .await?;
        assert_eq!(
            value.as_deref(),
            Some(key.as_bytes()),
            "acknowledged write {key} (group {group}) is missing\n{}",
            logs(&cluster.nodes)
        );
    }

    // The killed node restarts from its data dir and rejoins.
    cluster.nodes[1].start()?;
    let mut only_restarted = KvClient::new(vec![cluster.addrs[1].clone()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Leadership may or may not return to node 2; it answers for the groups it leads and
        // hints the leader for the others, so any acknowledged put through it proves it is back.
        let mut ok = false;
        for group in 0..=SHARDS {
            if only_restarted
                .put_once(group, b"after-restart", b"x")
                .await
                .is_ok()
            {
                ok = true;
                break;
            }
        }
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted node never rejoined\n{}",
            logs(&cluster.nodes)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_foreign_data_dirs_are_refused_with_the_file_named() -> anyhow::Result<()> {
    let mut cluster = cluster("dir-test")?;
    let node = &mut cluster.nodes[0];
    node.start()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    node.kill9().await?;

    // Another cluster's id on this data dir.
    let foreign_root = tempfile::tempdir()?;
    let mut foreign = KeelProcess::new(
        1,
        &node.addr,
        "other-cluster",
        &format!("1={}", node.addr),
        foreign_root.path(),
        SHARDS,
    );
    let foreign_dir = foreign.data_dir.clone();
    std::fs::remove_dir_all(&foreign_dir).ok();
    copy_dir(&node.data_dir, &foreign_dir)?;
    foreign.start()?;
    let code = foreign.wait_exit(Duration::from_secs(20)).await?;
    let text = foreign.log_text();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("dir-test") && text.contains("other-cluster"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");

    // Another shard count on an existing data dir.
    let mut resharded = KeelProcess::new(
        1,
        &node.addr,
        "dir-test",
        &format!("1={}", node.addr),
        &node.data_dir.join(".."),
        SHARDS * 2,
    );
    resharded.start()?;
    let code = resharded.wait_exit(Duration::from_secs(20)).await?;
    let text = resharded.log_text();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "was created with {SHARDS} shard groups but --shards is {}",
            SHARDS * 2
        )),
        "{text}"
    );

    // Without --shards, the existing data dir keeps its count (the default would differ).
    let mut unsharded = KeelProcess::new(
        1,
        &node.addr,
        "dir-test",
        &format!("1={}", node.addr),
        &node.data_dir.join(".."),
        SHARDS,
    )
    .without_shards();
    unsharded.start()?;
    let report = wait_for_status(
        "a node started without --shards to serve its status",
        &node.addr,
        Duration::from_secs(20),
        |report| report.lines().any(|l| l.starts_with("shard ")),
    )
    .await;
    unsharded.kill9().await?;
    let report = report.map_err(|e| e.context(unsharded.log_text()))?;
    assert_eq!(
        group_leaders(&report).len() as u64,
        SHARDS + 1,
        "a node started without --shards on a {SHARDS}-shard data dir must keep {SHARDS} shards\n{report}"
    );

    // A truncated SST file (a second start flushes the recovered WAL into SST files).
    node.start()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    node.kill9().await?;
    let db = node.data_dir.join("db");
    let sst = std::fs::read_dir(&db)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("an SST file after a restart");
    let sst_bytes = std::fs::read(&sst)?;
    std::fs::write(&sst, &sst_bytes[..sst_bytes.len() / 2])?;
    let truncated_len = std::fs::metadata(&sst)?.len();
    let sst_name = sst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    node.start()?;
    let code = node.wait_exit(Duration::from_secs(20)).await?;
    let text = node.log_text();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("cannot open the data directory") && text.contains(&sst_name),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(
        std::fs::metadata(&sst)?.len(),
        truncated_len,
        "the damaged file was rewritten"
    );
    std::fs::write(&sst, &sst_bytes)?;

    // A CURRENT file pointing nowhere.
    std::fs::write(db.join("CURRENT"), b"MANIFEST-999999\n")?;
    node.start()?;
    let code = node.wait_exit(Duration::from_secs(20)).await?;
    let text = node.log_text();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("MANIFEST-999999"), "{text}");
    Ok(())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_of_another_cluster_is_refused_and_named() -> anyhow::Result<()> {
    let mut ours = cluster("cluster-a")?;
    let theirs_root = tempfile::tempdir()?;
    let peers = format!("1={},2={}", ours.addrs[0], ours.addrs[1]);
    // Node 2 of another cluster claims node 2's address.
    let mut intruder = KeelProcess::new(
        2,
        &ours.addrs[1],
        "cluster-b",
        &peers,
        theirs_root.path(),
        1,
    );
    let mut node1 = KeelProcess::new(1, &ours.addrs[0], "cluster-a", &peers, ours._root.path(), 1);
    node1.start()?;
    intruder.start()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ours_log = node1.log_text();
        let theirs_log = intruder.log_text();
        let refused = ours_log.contains("refused a raft message from another cluster")
            && ours_log.contains("cluster-b");
        let named = theirs_log.contains("peer refused a raft message")
            && theirs_log.contains(&ours.addrs[0]);
        if refused && named {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no clear refusal\n--- node 1 ---\n{ours_log}\n--- intruder ---\n{theirs_log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Neither side can commit with the other's vote.
    let mut client = KvClient::new(vec![ours.addrs[0].clone()]);
    assert!(client.put_once(1, b"k", b"v").await.is_err());
    node1.kill9().await?;
    intruder.kill9().await?;
    ours.nodes.clear();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_dev_keeps_writes_across_a_restart() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let data_dir = root.path().join("keel-data");
    let start = || -> anyhow::Result<tokio::process::Child> {
        Ok(
            tokio::process::Command::new(keel_tests::process::keel_binary()?)
                .args(["dev", "--port", &port.to_string(), "--data-dir"])
                .arg(&data_dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()?,
        )
    };
    let mut dev = start()?;
    let mut client = KvClient::new(vec![addr.clone()]);
    // The metadata group and keel dev's default 2 shard groups.
    let groups = 0..=2;
    for group in groups.clone() {
        put_until_acked(
            &mut client,
            group,
            format!("dev-{group}").as_bytes(),
            Duration::from_secs(30),
        )
        .await?;
    }
    // A graceful stop (SIGTERM), then a start from the same data dir.
    let pid = dev.id().expect("running");
    std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()?;
    let status = tokio::time::timeout(Duration::from_secs(20), dev.wait()).await??;
    assert!(
        status.success(),
        "keel dev did not stop cleanly on SIGTERM: {status}"
    );
    let _dev = start()?;
    let mut client = KvClient::new(vec![addr]);
    for group in groups {
        let key = format!("dev-{group}");
        let value = client
            .get(group, key.as_bytes(), Duration::from_secs(30))
            .await?;
        assert_eq!(
            value.as_deref(),
            Some(key.as_bytes()),
            "keel dev lost {key} across a restart"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_interrupted_by_a_crash_is_finished_at_the_next_start() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut node = KeelProcess::new(
        1,
        &addr,
        "resume-test",
        &format!("1={addr}"),
        root.path(),
        SHARDS,
    );
    // What a crash after hosting the first group leaves behind: group 0 only, no shard count.
    {
        let identity = keel_storage::NodeIdentity {
            cluster_id: "resume-test".to_string(),
            node_id: 1,
        };
        let store = keel_storage::Store::open(&node.data_dir.join("db"), &identity)?;
        let registry = keel_raft::GroupRegistry::new(
            1,
            "resume-test",
            store,
            std::sync::Arc::new(keel_raft::kv::KvApplier),
            &keel_raft::GroupConfig::default(),
            node.data_dir.join("snapshots"),
            keel_raft::LinkFaults::default(),
        )?;
        registry.create(0).await?;
        registry.shutdown().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.start()?;
    let mut client = KvClient::new(vec![addr]);
    for group in 0..=SHARDS {
        if let Err(e) = put_until_acked(&mut client, group, b"k", Duration::from_secs(30)).await {
            panic!(
                "group {group} is not served after the resumed bootstrap: {e}\n{}",
                node.log_text()
            );
        }
    }
    node.kill9().await?;
    Ok(())
}

/// `keel cluster status --address ADDR`: (exit code, stdout + stderr).
fn cluster_status(addr: &str) -> anyhow::Result<(i32, String)> {
    keel_cluster(&["status", "--address", addr])
}

/// Polls `keel cluster status --address ADDR` until it succeeds with a report `ok` accepts;
/// answers that report, or after `within` an error quoting the last one.
async fn wait_for_status(
    what: &str,
    addr: &str,
    within: Duration,
    ok: fn(&str) -> bool,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    loop {
        let (code, report) = cluster_status(addr)?;
        if code == 0 && ok(&report) {
            return Ok(report);
        }
        if Instant::now() > deadline {
            anyhow::bail!("waited {within:?} for {what}; last report:\n{report}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leader column of every group row of a `keel cluster status` report.
fn group_leaders(report: &str) -> Vec<String> {
    report
        .lines()
        .filter(|l| l.starts_with("metadata") || l.starts_with("shard "))
        .filter_map(|l| {
            let columns: Vec<&str> = l.split_whitespace().collect();
            let at = if l.starts_with("shard ") { 2 } else { 1 };
            columns.get(at).map(|s| s.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_from_config_files_reports_its_status_and_moves_leaders_off_a_dead_node_and_back(
) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let addrs: Vec<String> = (0..3)
        .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
        .collect::<Result<_, _>>()?;
    let peers: String = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("  - id: {}\n    address: {a}\n", i + 1))
        .collect();
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        let config = root.path().join(format!("node-{id}.yaml"));
        std::fs::write(
            &config,
            format!(
                "node_id: {id}\ncluster_id: status-test\nlisten: {addr}\ndata_dir: {}\nshards: {SHARDS}\npeers:\n{peers}",
                root.path().join(format!("node-{id}")).display()
            ),
        )?;
        let mut node = KeelProcess::from_config(id, addr, &config, root.path());
        node.start()?;
        nodes.push(node);
    }
    let reproduce = "cargo test --workspace --test process_cluster -- a_cluster_from_config_files";
    let wait = |what: &'static str, addr: String, ok: fn(&str) -> bool| async move {
        wait_for_status(what, &addr, Duration::from_secs(30), ok).await
    };
    let formed = wait("every group to elect a leader", addrs[1].clone(), |r| {
        let leaders = group_leaders(r);
        r.matches(" up").count() == 3
            && leaders.len() == SHARDS as usize + 1
            && leaders.iter().all(|l| l != "none")
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}\nreproduce: {reproduce}", logs(&nodes)))?;
    assert!(formed.contains("cluster status-test (3 nodes)"), "{formed}");

    nodes[1].kill9().await?;
    let killed = Instant::now();
    let moved = wait(
        "the groups node 2 led to elect new leaders",
        addrs[0].clone(),
        |r| {
            let leaders = group_leaders(r);
            r.contains("down (")
                && leaders.len() == SHARDS as usize + 1
                && leaders.iter().all(|l| l != "none" && l != "2")
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}\nreproduce: {reproduce}", logs(&nodes)))?;
    eprintln!(
        "leaders moved off the killed node {:?} after SIGKILL:\n{moved}",
        killed.elapsed()
    );
    let (code, refused) = cluster_status(&addrs[1])?;
    assert_eq!(
        code, 1,
        "status of a dead node's address must fail: {refused}"
    );
    assert!(refused.contains(&addrs[1]), "{refused}");

    // Node 2 returns; the others hand it shards until no node leads two more than another.
    nodes[1].start()?;
    let returned = Instant::now();
    let balanced = wait_for_status(
        "node 2 to lead its share of the shards again",
        &addrs[0],
        Duration::from_secs(60),
        |r| {
            let leaders = group_leaders(r);
            let led = |node: &str| leaders.iter().skip(1).filter(|l| *l == node).count();
            let counts = [led("1"), led("2"), led("3")];
            r.matches(" up").count() == 3
                && counts.iter().sum::<usize>() == SHARDS as usize
                && counts.iter().max() <= counts.iter().min().map(|m| m + 1).as_ref()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}\nreproduce: {reproduce}", logs(&nodes)))?;
    eprintln!(
        "leadership balanced {:?} after node 2 returned:\n{balanced}",
        returned.elapsed()
    );
    Ok(())
}

/// Runs `keel cluster ARGS...`: (exit code, stdout + stderr).
/// `keel cluster add-node` of node 4 at `fourth` through `address`, repeated until `done` says
/// so of its exit code and output, or for 30 s; answers the last exit code and output.
async fn add_node_4_until(
    address: &str,
    fourth: &str,
    done: impl Fn(i32, &str) -> bool,
) -> anyhow::Result<(i32, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out) = keel_cluster(&[
            "add-node",
            "--address",
            address,
            "--node-id",
            "4",
            "--node-address",
            fourth,
        ])?;
        if done(code, &out) || Instant::now() > deadline {
            return Ok((code, out));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// DescribeNamespace("default") through the node at `address`, connecting until it listens.
async fn describe_default_namespace(
    address: &str,
) -> Result<keel_proto::temporal::api::workflowservice::v1::DescribeNamespaceResponse, tonic::Status>
{
    use keel_proto::temporal_services::workflowservice::workflow_service_client::WorkflowServiceClient;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let channel = loop {
        match endpoint.connect().await {
            Ok(channel) => break channel,
            Err(e) if Instant::now() > deadline => {
                return Err(tonic::Status::unavailable(e.to_string()))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    WorkflowServiceClient::new(channel)
        .describe_namespace(
            keel_proto::temporal::api::workflowservice::v1::DescribeNamespaceRequest {
                namespace: "default".into(),
                ..Default::default()
            },
        )
        .await
        .map(tonic::Response::into_inner)
}

fn keel_cluster(args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = std::process::Command::new(keel_tests::process::keel_binary()?)
        .arg("cluster")
        .args(args)
        .output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.code().unwrap_or(-1), text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_by_a_joining_one() -> anyhow::Result<()> {
    let reproduce = "cargo test --workspace --test process_cluster -- a_dead_node_is_replaced";
    let mut c = cluster("replace-test")?;
    let fourth = format!("127.0.0.1:{}", free_port()?);
    let peers = c
        .addrs
        .iter()
        .chain([&fourth])
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    for node in &mut c.nodes {
        node.start()?;
    }
    let mut client = KvClient::new(c.addrs.clone());
    for group in 0..=SHARDS {
        put_until_acked(&mut client, group, b"before", Duration::from_secs(30)).await?;
    }
    // A node the cluster has not added is refused.
    let (code, refused) = keel_cluster(&[
        "add-node",
        "--address",
        &c.addrs[0],
        "--node-id",
        "4",
        "--node-address",
        &fourth,
    ])?;
    assert_ne!(
        code, 0,
        "adding a node that is not running must fail: {refused}"
    );
    assert!(refused.contains("--join"), "{refused}");

    // A node started with another shard count is refused, with the count to use.
    let mut wrong = KeelProcess::new(
        4,
        &fourth,
        "replace-test",
        &peers,
        c._root.path(),
        SHARDS + 1,
    )
    .joining();
    wrong.start()?;
    let refused = add_node_4_until(&c.addrs[0], &fourth, |code, out| {
        code == 0 || out.contains("--shards")
    })
    .await?;
    assert!(
        refused.0 != 0 && refused.1.contains(&format!("--shards {SHARDS} --join")),
        "a joining node with {} shards was not refused: {refused:?}\nreproduce: {reproduce}",
        SHARDS + 1
    );
    wrong.kill9().await?;
    std::fs::remove_dir_all(&wrong.data_dir)?;

    let mut joining =
        KeelProcess::new(4, &fourth, "replace-test", &peers, c._root.path(), SHARDS).joining();
    joining.start()?;
    // A node not yet added knows no namespaces; it must not say they do not exist (it once
    // answered NotFound for "default"): a lookup it misses first asks the metadata leader.
    let refused = describe_default_namespace(&fourth).await;
    assert!(
        matches!(&refused, Err(status) if status.code() == tonic::Code::Unavailable),
        "a node that is not a member yet answered {refused:?}\nreproduce: {reproduce}"
    );
    let added = add_node_4_until(&c.addrs[0], &fourth, |code, _| code == 0).await?;
    assert_eq!(
        added.0,
        0,
        "add-node failed: {}\n{}\nreproduce: {reproduce}",
        added.1,
        logs(&c.nodes)
    );

    let described = describe_default_namespace(&fourth).await;
    assert!(
        described.is_ok(),
        "the joined node does not know namespace default: {described:?}\nreproduce: {reproduce}"
    );

    c.nodes[1].kill9().await?;
    let (code, removed) =
        keel_cluster(&["remove-node", "--address", &c.addrs[0], "--node-id", "2"])?;
    assert_eq!(
        code, 0,
        "remove-node failed: {removed}\nreproduce: {reproduce}"
    );
    let (_, status) = keel_cluster(&["status", "--address", &fourth])?;
    assert!(
        status.contains("(3 nodes)") && !status.contains(&c.addrs[1]),
        "{status}"
    );

    // The new member serves: every group takes writes with node 2 gone, through node 4 too.
    let mut client = KvClient::new(vec![fourth.clone(), c.addrs[0].clone(), c.addrs[2].clone()]);
    for group in 0..=SHARDS {
        put_until_acked(&mut client, group, b"after", Duration::from_secs(30)).await?;
        let read = client
            .get(group, b"before", Duration::from_secs(30))
            .await?;
        assert_eq!(
            read.as_deref(),
            Some(&b"before"[..]),
            "group {group}\nreproduce: {reproduce}"
        );
    }
    joining.kill9().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_created_with_another_shard_count_than_the_cluster_records_stop() -> anyhow::Result<()>
{
    let reproduce = "cargo test --workspace --test process_cluster -- nodes_created_with_another";
    let mut cluster = cluster("shard-count-test")?;
    // Node 1 initializes the metadata group (slot 0) with 9 shards; nodes 2 and 3 have 8.
    let root = cluster._root.path().to_path_buf();
    let peers: String = cluster
        .addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    cluster.nodes[0] = KeelProcess::new(
        1,
        &cluster.addrs[0],
        "shard-count-test",
        &peers,
        &root,
        SHARDS + 1,
    );
    for node in &mut cluster.nodes {
        node.start()?;
    }
    // Whichever count the metadata group records first, the nodes with the other one stop.
    let mut exits: Vec<Option<Option<i32>>> = vec![None; 3];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut settle: Option<Instant> = None;
    while Instant::now() < deadline && settle.is_none_or(|at| Instant::now() < at) {
        for (i, node) in cluster.nodes.iter_mut().enumerate() {
            if exits[i].is_none() {
                if let Ok(code) = node.wait_exit(Duration::from_millis(100)).await {
                    exits[i] = Some(code);
                    settle.get_or_insert(Instant::now() + Duration::from_secs(5));
                }
            }
        }
    }
    let stopped: Vec<usize> = (0..3).filter(|i| exits[*i].is_some()).collect();
    let expected: &[&[usize]] = &[&[0], &[1, 2]];
    assert!(
        expected.contains(&stopped.as_slice()),
        "the nodes whose shard count differs from the recorded one should stop, and only they: exits {exits:?}\n{}\nreproduce: {reproduce}",
        logs(&cluster.nodes)
    );
    for i in stopped {
        let log = cluster.nodes[i].log_text();
        assert!(
            log.contains("but the cluster has") && log.contains("--join"),
            "node {} should say which count the cluster has and what to do:\n{log}\nreproduce: {reproduce}",
            i + 1
        );
        assert_ne!(
            exits[i],
            Some(Some(0)),
            "node {} should exit with an error",
            i + 1
        );
    }
    Ok(())
}
