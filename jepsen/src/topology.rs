//! The test network: one network namespace per node slot, one for the clients and one holding a
//! bridge, joined by veth pairs. Everything lives in namespaces named after the run, so nothing
//! touches the host's own network, and `teardown` (also run on drop) removes it all.

use std::{fs::File, os::fd::AsRawFd, process::Command};

use anyhow::{bail, Context, Result};

/// The /24 the test network uses.
const SUBNET: &str = "10.77.0";
/// Host number of the clients' address in the subnet.
const CLIENT_HOST: usize = 100;

/// The namespaces and addresses of one run.
pub struct Topology {
    prefix: String,
    slots: usize,
    torn_down: bool,
}

impl Topology {
    /// Creates `slots` node namespaces (`<prefix>n1`..), a client namespace (`<prefix>c`) and a
    /// bridge namespace (`<prefix>br`), removing leftovers of an earlier run with this prefix.
    pub fn create(prefix: &str, slots: usize) -> Result<Topology> {
        let mut topology = Topology {
            prefix: prefix.to_string(),
            slots,
            torn_down: false,
        };
        topology.remove_namespaces();
        topology.torn_down = false;
        let bridge_ns = topology.bridge_namespace();
        ip(&["netns", "add", &bridge_ns])?;
        ip_in(&bridge_ns, &["link", "add", "br0", "type", "bridge"])?;
        ip_in(&bridge_ns, &["link", "set", "br0", "up"])?;
        ip_in(&bridge_ns, &["link", "set", "lo", "up"])?;
        let mut members: Vec<(String, String)> = (1..=slots)
            .map(|slot| (topology.node_namespace(slot), topology.node_ip(slot)))
            .collect();
        members.push((topology.client_namespace(), topology.client_ip()));
        for (index, (namespace, address)) in members.iter().enumerate() {
            let outer = format!("{}v{index}", topology.prefix);
            ip(&["netns", "add", namespace])?;
            ip(&[
                "link", "add", &outer, "netns", &bridge_ns, "type", "veth", "peer", "name", "eth0",
                "netns", namespace,
            ])?;
            ip_in(&bridge_ns, &["link", "set", &outer, "master", "br0"])?;
            ip_in(&bridge_ns, &["link", "set", &outer, "up"])?;
            ip_in(
                namespace,
                &["addr", "add", &format!("{address}/24"), "dev", "eth0"],
            )?;
            ip_in(namespace, &["link", "set", "eth0", "up"])?;
            ip_in(namespace, &["link", "set", "lo", "up"])?;
        }
        Ok(topology)
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    pub fn node_namespace(&self, slot: usize) -> String {
        format!("{}n{slot}", self.prefix)
    }

    pub fn client_namespace(&self) -> String {
        format!("{}c", self.prefix)
    }

    fn bridge_namespace(&self) -> String {
        format!("{}br", self.prefix)
    }

    pub fn node_ip(&self, slot: usize) -> String {
        format!("{SUBNET}.{slot}")
    }

    pub fn client_ip(&self) -> String {
        format!("{SUBNET}.{CLIENT_HOST}")
    }

    /// Moves the calling thread into the client namespace. Call it before any other thread is
    /// started (threads inherit it), so every connection the harness opens comes from there.
    pub fn enter_client_namespace(&self) -> Result<()> {
        let path = format!("/run/netns/{}", self.client_namespace());
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns on a namespace file descriptor we own; it only changes this thread's
        // network namespace.
        let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if result != 0 {
            bail!("setns({path}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Drops all packets between the two slots' nodes, both ways.
    pub fn cut(&self, a: usize, b: usize) -> Result<()> {
        for (from, to) in [(a, b), (b, a)] {
            iptables_in(
                &self.node_namespace(to),
                &["-A", "INPUT", "-s", &self.node_ip(from), "-j", "DROP"],
            )?;
        }
        Ok(())
    }

    /// Removes every partition.
    pub fn heal(&self) -> Result<()> {
        for slot in 1..=self.slots {
            iptables_in(&self.node_namespace(slot), &["-F", "INPUT"])?;
        }
        Ok(())
    }

    /// Removes every namespace of the run (veth pairs go with them).
    pub fn teardown(&mut self) {
        self.remove_namespaces();
    }

    fn remove_namespaces(&mut self) {
        if self.torn_down {
            return;
        }
        let mut namespaces: Vec<String> = (1..=self.slots)
            .map(|slot| self.node_namespace(slot))
            .collect();
        namespaces.push(self.client_namespace());
        namespaces.push(self.bridge_namespace());
        for namespace in namespaces {
            // Absent namespaces are fine: this also clears leftovers before creating.
            let _ = Command::new("ip")
                .args(["netns", "delete", &namespace])
                .stderr(std::process::Stdio::null())
                .status();
        }
        self.torn_down = true;
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Runs a command to completion, failing with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    let output = Command::new(program).args(args).output().with_context(|| {
        format!(
            "running {program} (is it installed? scripts/jepsen installs what the harness needs)"
        )
    })?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}

fn ip_in(namespace: &str, args: &[&str]) -> Result<()> {
    let mut full = vec!["-n", namespace];
    full.extend_from_slice(args);
    run("ip", &full)
}

fn iptables_in(namespace: &str, args: &[&str]) -> Result<()> {
    let mut full = vec!["netns", "exec", namespace, "iptables", "-w"];
    full.extend_from_slice(args);
    run("ip", &full)
}
