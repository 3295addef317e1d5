//! grantkeeper deployments for the benchmarks: a config file, a master key and a store, and
//! `grantkeeper serve` processes on 127.0.0.1 started from the release binary, as an operator
//! runs them. Also the scratch PostgreSQL databases they may use.

use crate::google::Google;
use anyhow::Context;
use grantkeeper_core::{ExposeSecret, MasterKey, SecretString};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Writes a file only its owner may read (keys, client secrets).
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

/// One deployment: `dir/grantkeeper.toml`, `dir/master.key`, `dir/client_secret.json`, and
/// the store it names.
pub struct Deployment {
    pub bin: PathBuf,
    pub config: PathBuf,
    pub store_url: String,
    master: SecretString,
}

impl Deployment {
    /// Writes the files of a deployment in `dir` pointing at the emulator and `store_url`. The
    /// rate limits are off (the load comes from one address and one key) and nothing else
    /// departs from the defaults.
    pub fn new(
        bin: &Path,
        google: &Google,
        store_url: &str,
        dir: &Path,
    ) -> anyhow::Result<Deployment> {
        std::fs::create_dir_all(dir)?;
        let master = MasterKey::generate_base64();
        write_private(
            &dir.join("master.key"),
            format!("{}\n", master.expose_secret()).as_bytes(),
        )?;
        google.write_client_secret(&dir.join("client_secret.json"))?;
        let config = dir.join("grantkeeper.toml");
        let base = &google.base;
        std::fs::write(
            &config,
            format!(
                "[server]\naddr = \"127.0.0.1:0\"\n\
                 [provider]\nissuer = {base:?}\napi_base = {base:?}\n\
                 client_secret_file = \"client_secret.json\"\n\
                 [store]\nurl = {store_url:?}\n\
                 [vault]\nmaster_key_file = \"master.key\"\n\
                 [limits]\nauthcode_per_minute = 0\nv1_per_second = 0\n"
            ),
        )?;
        Ok(Deployment {
            bin: bin.to_owned(),
            config,
            store_url: store_url.to_owned(),
            master,
        })
    }

    pub fn master_key(&self) -> anyhow::Result<MasterKey> {
        Ok(MasterKey::from_base64(&self.master)?)
    }

    /// `grantkeeper migrate`: the schema, before anything else touches the store.
    pub fn migrate(&self) -> anyhow::Result<()> {
        self.run(&["migrate"]).map(|_| ())
    }

    /// A new API key with the `token` scope (`grantkeeper api-keys create`).
    pub fn api_key(&self) -> anyhow::Result<SecretString> {
        let out = self.run(&["api-keys", "create", "--name", "bench", "--scope", "token"])?;
        let key = out
            .lines()
            .last()
            .context("api-keys create printed nothing")?
            .trim()
            .to_owned();
        Ok(SecretString::from(key))
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let config = self.config.to_str().context("config path")?;
        let out = Command::new(&self.bin)
            .args(args)
            .args(["--config", config])
            .env("RUST_LOG", "warn")
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        // Not echoed on success: `api-keys create` prints a secret.
        anyhow::ensure!(
            out.status.success(),
            "grantkeeper {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `grantkeeper serve --config ...`, once it says `listening on`.
    pub async fn serve(&self) -> anyhow::Result<Server> {
        let (bin, config) = (self.bin.clone(), self.config.clone());
        tokio::task::spawn_blocking(move || Server::start(&bin, &config)).await?
    }
}

/// A command line put before the grantkeeper binary for `serve` processes (profiling).
pub const SERVE_WRAPPER: &str = "GRANTKEEPER_BENCH_SERVE_WRAPPER";

/// A running `grantkeeper serve`, stopped when dropped.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    fn start(bin: &Path, config: &Path) -> anyhow::Result<Server> {
        // For profiling: e.g. `valgrind --tool=massif` or `perf record -g -o FILE --`.
        let wrapper = std::env::var(SERVE_WRAPPER).unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(bin);
                command
            }
            None => Command::new(bin),
        };
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("grantkeeper serve ended before listening");
            };
            if let Some(url) = line?.strip_prefix("listening on ") {
                let url = url.trim().to_owned();
                // Keep reading, or a full pipe would block the server.
                std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
                return Ok(Server { child, url });
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `kB` field of `/proc/<pid>/status` (`VmHWM`: peak resident set; `VmRSS`: now), in
    /// bytes.
    pub fn status_bytes(&self, field: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .with_context(|| format!("no {field} in /proc/{}/status", self.pid()))?;
        let kb: u64 = line
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("{field} is not a number"))?;
        Ok(kb * 1024)
    }

    /// CPU time the process has used so far (user and system, every thread).
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        process_cpu(self.pid())
    }

    /// Its `/metrics` counter (or gauge) `name`, summed over label sets.
    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> anyhow::Result<f64> {
        let text = http
            .get(format!("{}/metrics", self.url))
            .send()
            .await?
            .text()
            .await?;
        let mut sum = 0.0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let family = series.split('{').next().unwrap_or(series);
            if family == name {
                sum += value.parse::<f64>().unwrap_or(0.0);
            }
        }
        Ok(sum)
    }
}

impl Drop for Server {
    /// SIGTERM (the server writes what it holds and exits), SIGKILL after 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user and system) of a process, from `/proc/<pid>/stat`, whose clock ticks are
/// USER_HZ, 100 a second on Linux.
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unreadable stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .context("short stat")?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Ok(Duration::from_millis(ticks * 10))
}

static NEXT_DATABASE: AtomicU32 = AtomicU32::new(0);
const DATABASE_PREFIX: &str = "gk_bench_";

/// A PostgreSQL database made for one scenario and dropped after it.
pub struct ScratchDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl ScratchDatabase {
    /// Makes `gk_bench_<pid>_<n>` on the server of `admin_url`, first dropping those left by
    /// bench processes that are gone.
    pub async fn create(admin_url: &str) -> anyhow::Result<ScratchDatabase> {
        let mut admin = PgConnection::connect(admin_url)
            .await
            .context("connecting to PostgreSQL (--postgres)")?;
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
                .bind(DATABASE_PREFIX)
                .fetch_all(&mut admin)
                .await?;
        for name in names {
            let pid = name
                .strip_prefix(DATABASE_PREFIX)
                .and_then(|rest| rest.split('_').next())
                .filter(|pid| pid.parse::<u32>().is_ok());
            if let Some(pid) = pid
                && !Path::new("/proc").join(pid).exists()
            {
                drop_database(&mut admin, &name).await?;
            }
        }
        let name = format!(
            "{DATABASE_PREFIX}{}_{}",
            std::process::id(),
            NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
        );
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await?;
        admin.close().await?;
        let mut url = url::Url::parse(admin_url)?;
        url.set_path(&name);
        Ok(ScratchDatabase {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    pub async fn drop_now(self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        drop_database(&mut admin, &self.name).await?;
        admin.close().await?;
        Ok(())
    }
}

async fn drop_database(admin: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    admin
        .execute(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .await?;
    Ok(())
}
