//! A private PostgreSQL server for the chaos run: its own data directory
//! and port, started as the `postgres` user in its own process group, so
//! that a crash (SIGKILL of the whole group, or `pg_ctl stop -m immediate`)
//! hits only this run and never the shared server other tests use.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How Postgres is crashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgCrash {
    /// SIGKILL of the postmaster and every backend at once.
    KillGroup,
    /// `pg_ctl stop -m immediate` (SIGQUIT: no checkpoint, crash recovery at
    /// the next start).
    Immediate,
}

#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    log_dir: PathBuf,
    port: u16,
    uid: u32,
    gid: u32,
    child: Option<Child>,
    /// The process group of the last start (the postmaster's pid).
    pgid: u32,
    starts: usize,
    /// `postgres://postgres@127.0.0.1:<port>/chaos`
    pub url: String,
}

fn id_of(flag: &str) -> Result<u32, String> {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .map_err(|e| format!("id: {e}"))?;
    if !out.status.success() {
        return Err("there is no `postgres` user: install PostgreSQL 15 \
                    (`scripts/dev-env.sh start` does)"
            .into());
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("id {flag} postgres: {e}"))
}

fn find_bin() -> Result<PathBuf, String> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            format!("/usr/lib/postgresql: {e}: install PostgreSQL 15 (`scripts/dev-env.sh start`)")
        })?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists() && p.join("postgres").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_string())
}

/// Runs SQL; returns rows (fields separated by U+001F, rows by newline).
pub fn sql(url: &str, query: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .arg(url)
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-F",
            "\u{1f}",
            "-c",
            query,
        ])
        .env("PGCONNECT_TIMEOUT", "3")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Rows of `sql`, each split into its fields.
pub fn rows(url: &str, query: &str) -> Result<Vec<Vec<String>>, String> {
    Ok(sql(url, query)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\u{1f}').map(String::from).collect())
        .collect())
}

impl Postgres {
    /// `initdb` in `dir/pgdata` (trust authentication on loopback only).
    pub fn init(dir: &Path, port: u16) -> Result<Self, String> {
        let bin = find_bin()?;
        let uid = id_of("-u")?;
        let gid = id_of("-g")?;
        let data = dir.join("pgdata");
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        std::os::unix::fs::chown(&data, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        let mut perms = std::fs::metadata(&data)
            .map_err(|e| e.to_string())?
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o700);
        std::fs::set_permissions(&data, perms).map_err(|e| e.to_string())?;
        let out = Command::new(bin.join("initdb"))
            .uid(uid)
            .gid(gid)
            .current_dir("/")
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .map_err(|e| format!("run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut pg = Self {
            bin,
            data,
            log_dir: dir.to_path_buf(),
            port,
            uid,
            gid,
            child: None,
            pgid: 0,
            starts: 0,
            url: format!("postgres://postgres@127.0.0.1:{port}/chaos"),
        };
        pg.start()?;
        let admin = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        sql(&admin, "CREATE DATABASE chaos")?;
        Ok(pg)
    }

    /// Starts the server and waits until it takes connections (crash
    /// recovery included).
    pub fn start(&mut self) -> Result<(), String> {
        self.reap();
        self.starts += 1;
        let log = self.log_dir.join(format!("postgres-{}.log", self.starts));
        let file = File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(self.bin.join("postgres"))
            .uid(self.uid)
            .gid(self.gid)
            .process_group(0)
            .current_dir("/")
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            // A process crash loses nothing the OS has: WAL is written
            // (not synced) before a commit is acknowledged.
            .args(["-c", "fsync=off"])
            .args(["-c", "max_connections=300"])
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("spawn postgres: {e}"))?;
        self.pgid = child.id();
        super::parts::track(-(self.pgid as i32));
        self.child = Some(child);
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if sql(&admin, "SELECT 1").is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("postgres exited ({status}):\n{text}"));
            }
            if Instant::now() > deadline {
                return Err(format!("postgres did not come up; log {}", log.display()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Crashes the server; returns once every process of it is gone.
    pub fn crash(&mut self, how: PgCrash) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        match how {
            PgCrash::KillGroup => {
                if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
            }
            PgCrash::Immediate => {
                let _ = Command::new(self.bin.join("pg_ctl"))
                    .uid(self.uid)
                    .gid(self.gid)
                    .current_dir("/")
                    .arg("-D")
                    .arg(&self.data)
                    .args(["stop", "-m", "immediate", "-t", "30"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = child.wait();
        self.child = None;
        super::parts::untrack(-(self.pgid as i32));
        // The next start needs every backend gone (shared memory still
        // attached refuses it).
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.group_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn group_alive(&self) -> bool {
        // Any process left in the group the postmaster led?
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return false;
        };
        let pgid = self.pgid;
        entries.filter_map(|e| e.ok()).any(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                return false;
            };
            // pid (comm) state ppid pgrp ...
            let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else {
                return false;
            };
            let fields: Vec<&str> = after.split_whitespace().collect();
            fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) && pgid != 0
        })
    }

    fn reap(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(_)) = child.try_wait()
        {
            self.child = None;
        }
    }

    /// Whether the postmaster runs (it may have exited by itself).
    pub fn running(&mut self) -> bool {
        self.reap();
        self.child.is_some()
    }

    /// A clean stop at the end of the run.
    pub fn stop(&mut self) {
        self.crash(PgCrash::Immediate);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.crash(PgCrash::KillGroup);
    }
}
