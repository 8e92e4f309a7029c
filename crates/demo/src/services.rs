//! The command lines of the demo's services, from how they are wired together.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How the demo wires the node and the daemons to each other and to the simulated fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wiring {
    /// Where the node serves the dashboard.
    pub node_listen: SocketAddr,
    /// MySQL backup daemon port on 127.0.0.1.
    pub mysql_port: u16,
    /// rsync backup daemon port on 127.0.0.1.
    pub rsync_port: u16,
    /// The fleet's device addresses (`HOST:PORT`), polled by the node.
    pub devices: Vec<String>,
    /// The fleet's MariaDB port, when it has one (else no MySQL daemon).
    pub mariadb_port: Option<u16>,
    /// The fleet's rsync source template, when it has one (else no rsync daemon).
    pub rsync_source: Option<String>,
    /// Backup archive: results.
    pub results: PathBuf,
    /// Backup archive: videos.
    pub videos: PathBuf,
    /// State directories go under here (`node`, `mysql-backup`, `rsync-backup`).
    pub state: PathBuf,
    /// Seconds between backup cycles.
    pub interval: u64,
    /// Debug logging in every service.
    pub debug: bool,
}

/// One service to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Its subcommand, also the name of its log file.
    pub name: &'static str,
    /// Arguments after the binary.
    pub args: Vec<String>,
    /// A URL that answers 2xx once it serves.
    pub ready_url: String,
}

impl Wiring {
    /// The node's base URL.
    pub fn node_base(&self) -> String {
        format!("http://{}", self.node_listen)
    }

    /// The services to start, in order: the node, then each daemon the fleet has work for.
    pub fn services(&self) -> Vec<ServiceSpec> {
        let mut out = vec![self.node()];
        out.extend(self.mysql_backup());
        out.extend(self.rsync_backup());
        out
    }

    fn with_debug(&self, mut args: Vec<String>) -> Vec<String> {
        if self.debug {
            args.push("-D".into());
        }
        args
    }

    fn state(&self, name: &str) -> String {
        self.state.join(name).display().to_string()
    }

    fn node(&self) -> ServiceSpec {
        let mut args = strings(&[
            "node",
            "--listen",
            &self.node_listen.to_string(),
            "--mysql-backup-url",
            &format!("http://127.0.0.1:{}", self.mysql_port),
            "--rsync-backup-url",
            &format!("http://127.0.0.1:{}", self.rsync_port),
            "--state-dir",
            &self.state("node"),
            // The archive the daemons write, so the dashboard can list and serve it.
            "-r",
            &self.results.display().to_string(),
            "-v",
            &self.videos.display().to_string(),
        ]);
        for d in &self.devices {
            args.extend(strings(&["--device", d]));
        }
        ServiceSpec {
            name: "node",
            args: self.with_debug(args),
            ready_url: format!("{}/healthz", self.node_base()),
        }
    }

    fn mysql_backup(&self) -> Option<ServiceSpec> {
        let mariadb_port = self.mariadb_port?;
        let args = strings(&[
            "mysql-backup",
            "-p",
            &self.mysql_port.to_string(),
            "-i",
            &self.node_listen.to_string(),
            "-r",
            &self.results.display().to_string(),
            "--interval",
            &self.interval.max(1).to_string(),
            "--mysql-port",
            &mariadb_port.to_string(),
            "--state-dir",
            &self.state("mysql-backup"),
        ]);
        Some(ServiceSpec {
            name: "mysql-backup",
            args: self.with_debug(args),
            ready_url: format!("http://127.0.0.1:{}/status", self.mysql_port),
        })
    }

    fn rsync_backup(&self) -> Option<ServiceSpec> {
        let source = self.rsync_source.as_ref()?;
        let args = strings(&[
            "rsync-backup",
            "-p",
            &self.rsync_port.to_string(),
            "-i",
            &self.node_listen.to_string(),
            "-r",
            &self.results.display().to_string(),
            "-v",
            &self.videos.display().to_string(),
            "--source",
            source,
            "--interval",
            &self.interval.max(1).to_string(),
            "--rescan-interval",
            "60",
            "--state-dir",
            &self.state("rsync-backup"),
        ]);
        Some(ServiceSpec {
            name: "rsync-backup",
            args: self.with_debug(args),
            ready_url: format!("http://127.0.0.1:{}/status", self.rsync_port),
        })
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wiring() -> Wiring {
        Wiring {
            node_listen: "127.0.0.1:8080".parse().unwrap(),
            mysql_port: 41001,
            rsync_port: 41002,
            devices: vec!["127.0.0.10:9000".into(), "127.0.0.11:9000".into()],
            mariadb_port: Some(41003),
            rsync_source: Some("rsync://{ip}:8730/data".into()),
            results: "/d/backup/results".into(),
            videos: "/d/backup/videos".into(),
            state: "/d/state".into(),
            interval: 15,
            debug: false,
        }
    }

    #[test]
    fn the_node_and_both_daemons_are_wired_together() {
        let services = wiring().services();
        let names: Vec<&str> = services.iter().map(|s| s.name).collect();
        assert_eq!(names, ["node", "mysql-backup", "rsync-backup"]);
        let [node, mysql, rsync] = &services[..] else {
            unreachable!()
        };
        assert_eq!(
            node.args.join(" "),
            "node --listen 127.0.0.1:8080 --mysql-backup-url http://127.0.0.1:41001 \
             --rsync-backup-url http://127.0.0.1:41002 --state-dir /d/state/node \
             -r /d/backup/results -v /d/backup/videos \
             --device 127.0.0.10:9000 --device 127.0.0.11:9000"
        );
        assert_eq!(node.ready_url, "http://127.0.0.1:8080/healthz");
        assert_eq!(
            mysql.args.join(" "),
            "mysql-backup -p 41001 -i 127.0.0.1:8080 -r /d/backup/results --interval 15 \
             --mysql-port 41003 --state-dir /d/state/mysql-backup"
        );
        assert_eq!(mysql.ready_url, "http://127.0.0.1:41001/status");
        assert_eq!(
            rsync.args.join(" "),
            "rsync-backup -p 41002 -i 127.0.0.1:8080 -r /d/backup/results -v /d/backup/videos \
             --source rsync://{ip}:8730/data --interval 15 --rescan-interval 60 \
             --state-dir /d/state/rsync-backup"
        );
        assert_eq!(rsync.ready_url, "http://127.0.0.1:41002/status");
    }

    #[test]
    fn daemons_without_work_are_not_started_and_debug_reaches_everyone() {
        let w = Wiring {
            mariadb_port: None,
            rsync_source: None,
            debug: true,
            interval: 0,
            ..wiring()
        };
        let services = w.services();
        assert_eq!(
            services.len(),
            1,
            "an SQLite-only fleet without rsync: node only"
        );
        assert_eq!(services[0].args.last().map(String::as_str), Some("-D"));
        let w = Wiring {
            interval: 0,
            ..wiring()
        };
        assert!(w.services()[1]
            .args
            .windows(2)
            .any(|p| p == ["--interval", "1"]));
    }
}
