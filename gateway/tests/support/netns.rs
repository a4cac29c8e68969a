//! A small network of hosts made of network namespaces, for tests that
//! need several machines: each host is a namespace with one veth link to
//! a bridge that lives in a namespace of its own. Nothing is attached to
//! the machine's network: every address exists only inside these
//! namespaces, and every namespace is deleted on drop.

use std::net::Ipv4Addr;
use std::process::Command;

/// One host of the network.
#[derive(Debug, Clone)]
pub struct Host {
    /// Short name (also the bridge port's name).
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its address on the bridge's /24.
    #[allow(dead_code)]
    pub addr: Ipv4Addr,
}

/// The network; dropped, it deletes its namespaces.
#[derive(Debug)]
pub struct Net {
    bridge_ns: String,
    /// The hosts, in the order given.
    pub hosts: Vec<Host>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Net {
    /// Builds hosts `(name, address)` on one bridge. `Err` says why it
    /// could not (typically: no privilege to create namespaces), so the
    /// caller can skip with that message.
    pub fn new(tag: &str, hosts: &[(&str, Ipv4Addr)]) -> Result<Net, String> {
        let prefix = format!("qc{}{tag}", std::process::id());
        let bridge_ns = format!("{prefix}-br");
        ip(&["netns", "add", &bridge_ns])?;
        let mut net = Net { bridge_ns: bridge_ns.clone(), hosts: Vec::new() };
        let b = bridge_ns.as_str();
        ip(&["-n", b, "link", "set", "lo", "up"])?;
        ip(&["-n", b, "link", "add", "br0", "type", "bridge"])?;
        // Flood multicast to every port: no IGMP querier on this bridge.
        ip(&["-n", b, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"])?;
        ip(&["-n", b, "link", "set", "br0", "up"])?;
        for (name, addr) in hosts {
            let ns = format!("{prefix}-{name}");
            ip(&["netns", "add", &ns])?;
            net.hosts.push(Host { name: (*name).to_string(), ns: ns.clone(), addr: *addr });
            let port = format!("p-{name}");
            ip(&["-n", b, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["-n", b, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name}"))
    }

    /// `program` run inside host `name`'s namespace (`ip netns exec`, which
    /// execs it: the child's pid is the program's).
    pub fn command(&self, name: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host(name).ns, program]);
        c
    }

    /// Runs `f` on a new thread that lives in host `name`'s namespace:
    /// every socket it (and any thread it starts) opens belongs to that
    /// host.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.host(name).ns);
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the test host");
            f()
        })
    }

    /// `f` run in host `name`'s namespace, waited for.
    pub fn run_in<T: Send + 'static>(&self, name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn_in(name, f).join().expect("thread in a test host")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.ns]);
        }
        let _ = ip(&["netns", "del", &self.bridge_ns]);
    }
}
