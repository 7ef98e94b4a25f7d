//! A `nats-server` with JetStream.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::process::{self, Launch, Private, Watched};

/// How long a nats-server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between readiness probes.
const POLL: Duration = Duration::from_millis(10);

/// A private `nats-server -js` for tests that need to stop, kill or restart it.
///
/// Most tests should share [`nats_url`](crate::nats_url) instead; use this one when the
/// test is *about* the server going away (reconnects, JetStream durability across a
/// restart). It listens on 127.0.0.1 on a free port chosen at start and kept for its
/// whole life, keeps its JetStream store in its own temporary directory, and runs under
/// the crate's watchdog so that it dies with the test process even if that process is
/// killed. Dropping it kills the server and removes the directory.
pub struct NatsServer {
    /// Directory, port and process.
    inner: Private,
    /// The `nats-server` binary, fixed so that restarts run the same one.
    bin: PathBuf,
    /// The server name; the readiness probe checks it to make sure it talks to *this*
    /// server.
    name: String,
}

impl NatsServer {
    /// Starts a new server and returns once it accepts connections and sends its `INFO`.
    ///
    /// Blocking (up to ~20 s); fine inside a tokio runtime for test code. The error
    /// contains the tail of the server's log if it failed to come up.
    pub fn start() -> io::Result<NatsServer> {
        let bin = nats_server_bin()?;
        let dir = process::server_dir("nats")?;
        let name = crate::unique_name("nats");
        let (port, proc) =
            process::launch_on_free_port(|port| launch(&bin, dir.path(), port, &name))?;
        Ok(NatsServer {
            inner: Private {
                dir,
                port,
                proc: Mutex::new(Some(proc)),
            },
            bin,
            name,
        })
    }

    /// The client URL, `nats://127.0.0.1:PORT`; it stays valid across restarts.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.inner.port)
    }

    /// The TCP port the server listens on, for tests that want raw sockets.
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// Kills the server with SIGKILL (no graceful shutdown, like a crash) and waits until
    /// it is gone. The JetStream store directory is kept for [`NatsServer::restart`].
    /// Does nothing if the server is not running.
    pub fn stop(&mut self) {
        self.inner.stop();
    }

    /// Starts the server again on the same port with the same JetStream store, and
    /// returns once it accepts connections. Stops it first if it is still running.
    ///
    /// Fails if the port has been taken by another process in the meantime.
    pub fn restart(&mut self) -> io::Result<()> {
        self.inner.stop();
        let proc = process::launch(&launch(
            &self.bin,
            self.inner.dir.path(),
            self.inner.port,
            &self.name,
        ))?;
        self.inner.set(proc);
        Ok(())
    }

    /// Whether the server process is alive (false after [`NatsServer::stop`] or if it
    /// crashed).
    pub fn is_running(&self) -> bool {
        self.inner.is_running()
    }
}

#[cfg(test)]
impl NatsServer {
    /// The server's private directory, for tests of the cleanup.
    pub(crate) fn dir(&self) -> &Path {
        self.inner.dir.path()
    }
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("url", &self.url())
            .field("dir", &self.inner.dir.path())
            .field("running", &self.is_running())
            .finish()
    }
}

/// Starts a server whose lifetime is the test process: used for [`crate::nats_url`].
pub(crate) fn start_detached() -> io::Result<(String, Watched)> {
    let bin = nats_server_bin()?;
    // The watchdog removes the directory when the test process exits.
    let dir = process::server_dir("nats-shared")?.keep();
    let name = crate::unique_name("nats_shared");
    match process::launch_on_free_port(|port| launch(&bin, &dir, port, &name)) {
        Ok((port, proc)) => Ok((format!("nats://127.0.0.1:{port}"), proc)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// The launch description of a nats-server in `dir` on `port`.
fn launch<'a>(bin: &'a Path, dir: &'a Path, port: u16, name: &str) -> Launch<'a> {
    let args: Vec<OsString> = vec![
        "-a".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string().into(),
        "-js".into(),
        "-sd".into(),
        dir.join("js").into(),
        "--server_name".into(),
        name.into(),
    ];
    let name = name.to_owned();
    Launch {
        what: "nats-server",
        program: bin,
        args,
        dir,
        port,
        probe: Box::new(move |addr| read_info(addr).is_ok_and(|info| is_ours(&info, &name))),
        timeout: READY_TIMEOUT,
        poll: POLL,
    }
}

/// Whether an `INFO` payload comes from the JetStream-enabled server named `name`.
fn is_ours(info: &serde_json::Value, name: &str) -> bool {
    info.get("server_name").and_then(|v| v.as_str()) == Some(name)
        && info.get("jetstream").and_then(|v| v.as_bool()) == Some(true)
}

/// Connects to `addr` and returns the JSON of the `INFO` line the server greets with.
pub(crate) fn read_info(addr: SocketAddr) -> io::Result<serde_json::Value> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(stream.take(1 << 20)).read_line(&mut line)?;
    let json = line
        .strip_prefix("INFO ")
        .ok_or_else(|| io::Error::other(format!("not a NATS INFO line: {line:?}")))?;
    serde_json::from_str(json.trim()).map_err(io::Error::other)
}

/// Finds the `nats-server` binary once per process (see the crate docs for the order).
fn nats_server_bin() -> io::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(find_nats_server)
        .clone()
        .map_err(io::Error::other)
}

/// `$NATS_SERVER_BIN`, `nats-server` on `PATH`, `/usr/sbin/nats-server`, next to
/// `$SECANTUS_PYTHON`, else the cached virtualenv (installed on demand).
fn find_nats_server() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nats-server"));
    let fixed = [PathBuf::from("/usr/sbin/nats-server")];
    let beside_python = std::env::var_os("SECANTUS_PYTHON")
        .filter(|v| !v.is_empty())
        .and_then(|p| Some(Path::new(&p).parent()?.join("nats-server")));
    if let Some(found) = on_path
        .chain(fixed)
        .chain(beside_python)
        .find(|p| p.is_file())
    {
        return Ok(found);
    }
    let venv = crate::mongo::ensure_venv().map_err(|e| {
        format!("nats-server not found (set NATS_SERVER_BIN or put it on PATH): {e}")
    })?;
    Ok(venv.join("bin").join("nats-server"))
}
