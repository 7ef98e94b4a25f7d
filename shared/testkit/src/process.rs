//! Running a server process under a watchdog, choosing ports and waiting for readiness.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// The watchdog, run as `sh -c WATCHDOG p2piano-watchdog DIR PROGRAM ARGS...`.
///
/// Its stdin is a pipe whose write end only the test process holds. The server runs in
/// the background (with stdin `/dev/null`); a reader subshell blocks on the pipe. The
/// reader wakes up either because the test process wrote `keep` (explicit stop: kill the
/// server, keep DIR) or because the pipe hit EOF (the test process is gone: mark DIR as
/// orphaned, kill the server; the watchdog then removes DIR once the server is dead).
/// If the server exits on its own, the reader is killed and the watchdog exits too, so
/// "watchdog alive" means "server alive". The watchdog's exit status is the server's.
/// Arguments are passed as positional parameters, never spliced into the script, so no
/// quoting issues arise. Async lists get `/dev/null` as stdin in a non-interactive shell,
/// hence the pipe is moved to fd 3 first.
const WATCHDOG: &str = r#"d=$1; shift
exec 3<&0 </dev/null
"$@" 3<&- &
c=$!
( IFS= read -r l <&3; [ "$l" = keep ] || : > "$d/.p2piano-orphaned"; kill -9 "$c" ) 2>/dev/null &
r=$!
exec 3<&-
wait "$c"; s=$?
kill "$r" 2>/dev/null; wait "$r" 2>/dev/null
if [ -e "$d/.p2piano-orphaned" ]; then rm -rf -- "$d"; fi
exit "$s"
"#;

/// Name of the log file (server stdout + stderr) inside a server's directory.
pub(crate) const LOG_FILE: &str = "server.log";

/// How many bytes of the log end up in error messages.
const LOG_TAIL_BYTES: u64 = 4000;

/// A server process running under the watchdog.
///
/// Dropping it without [`Watched::stop`] leaves the server running until the test process
/// exits; that is what the shared servers rely on.
pub(crate) struct Watched {
    /// The watchdog shell; it exits exactly when the server does.
    child: Child,
    /// The write end of the watchdog's stdin pipe; closing it kills the server.
    stdin: Option<ChildStdin>,
}

impl Watched {
    /// Starts `program args` under the watchdog, with `dir` as working directory, stdout
    /// and stderr appended to `log`. `dir` is removed by the watchdog if the test process
    /// dies without stopping the server.
    fn spawn(program: &Path, args: &[OsString], dir: &Path, log: &File) -> io::Result<Watched> {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("p2piano-watchdog")
            .arg(dir)
            .arg(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .spawn()?;
        let stdin = child.stdin.take();
        Ok(Watched { child, stdin })
    }

    /// Whether the server is still running (the watchdog has not exited).
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the server with SIGKILL and waits until it is gone; its directory is kept.
    pub(crate) fn stop(mut self) -> Option<ExitStatus> {
        if let Some(mut stdin) = self.stdin.take() {
            // The watchdog may already be gone (server crashed): EPIPE is fine then.
            let _ = stdin.write_all(b"keep\n");
            let _ = stdin.flush();
        }
        self.child.wait().ok()
    }
}

/// How to tell that a freshly started server serves requests.
pub(crate) type Probe<'a> = Box<dyn Fn(SocketAddr) -> bool + 'a>;

/// Everything needed to (re)start one server.
pub(crate) struct Launch<'a> {
    /// Human-readable server kind, for error messages.
    pub what: &'static str,
    /// The executable.
    pub program: &'a Path,
    /// Its arguments (already containing the port).
    pub args: Vec<OsString>,
    /// The server's private directory: working directory, log file, data.
    pub dir: &'a Path,
    /// The port the server was told to listen on (127.0.0.1).
    pub port: u16,
    /// Returns true once the server at the address is ready.
    pub probe: Probe<'a>,
    /// How long to wait for readiness.
    pub timeout: Duration,
    /// Pause between two probes.
    pub poll: Duration,
}

/// Why a start failed.
pub(crate) enum StartError {
    /// The server exited before it became ready (e.g. its port was taken): worth a retry
    /// on another port.
    Exited(io::Error),
    /// Anything else (timeout, missing binary...): retrying would not help.
    Fatal(io::Error),
}

impl From<StartError> for io::Error {
    fn from(e: StartError) -> io::Error {
        match e {
            StartError::Exited(e) | StartError::Fatal(e) => e,
        }
    }
}

/// Starts the server described by `l` and waits until `l.probe` succeeds.
pub(crate) fn launch(l: &Launch<'_>) -> Result<Watched, StartError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, l.port));
    // A restart must not mistake another process on "our" port for our server.
    if let Err(e) = TcpListener::bind(addr) {
        return Err(StartError::Exited(io::Error::new(
            e.kind(),
            format!("{}: port {} is not free: {e}", l.what, l.port),
        )));
    }
    let log_path = l.dir.join(LOG_FILE);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| {
            fatal(format!(
                "{}: cannot open {}: {e}",
                l.what,
                log_path.display()
            ))
        })?;
    let log_start = log.seek(SeekFrom::End(0)).unwrap_or(0);
    let _ = writeln!(
        log,
        "=== p2piano-testkit: starting {} {} ===",
        l.program.display(),
        l.args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut proc = Watched::spawn(l.program, &l.args, l.dir, &log).map_err(|e| {
        fatal(format!(
            "{}: cannot spawn the watchdog (/bin/sh): {e}",
            l.what
        ))
    })?;

    let deadline = Instant::now() + l.timeout;
    loop {
        if let Ok(Some(status)) = proc.child.try_wait() {
            return Err(StartError::Exited(io::Error::other(format!(
                "{} exited before it was ready ({status}); log {}:\n{}",
                l.what,
                log_path.display(),
                log_tail(&log_path, log_start)
            ))));
        }
        if (l.probe)(addr) {
            // The probe may have talked to an intruder on the port while our server was
            // failing to bind: make sure ours is still alive.
            if proc.is_running() {
                return Ok(proc);
            }
            continue;
        }
        if Instant::now() >= deadline {
            proc.stop();
            return Err(StartError::Fatal(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} did not become ready on {addr} within {:?}; log {}:\n{}",
                    l.what,
                    l.timeout,
                    log_path.display(),
                    log_tail(&log_path, log_start)
                ),
            )));
        }
        thread::sleep(l.poll);
    }
}

/// Starts a server on a free port, trying a few ports in case another process grabs the
/// chosen one between choosing and binding. `make` builds the launch for a port.
pub(crate) fn launch_on_free_port<'a>(
    mut make: impl FnMut(u16) -> Launch<'a>,
) -> io::Result<(u16, Watched)> {
    const ATTEMPTS: usize = 5;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let port = free_port()?;
        match launch(&make(port)) {
            Ok(proc) => return Ok((port, proc)),
            Err(StartError::Exited(e)) => last = Some(e),
            Err(StartError::Fatal(e)) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no attempt made")))
}

/// A port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The end of the log written since `start`, for error messages.
pub(crate) fn log_tail(path: &Path, start: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::from("<no log>");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = start.max(len.saturating_sub(LOG_TAIL_BYTES));
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
        return String::from("<unreadable log>");
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Shorthand for a non-retryable start error.
fn fatal(msg: String) -> StartError {
    StartError::Fatal(io::Error::other(msg))
}

/// The state shared by [`NatsServer`](crate::NatsServer) and
/// [`MongoServer`](crate::MongoServer): a private directory, a fixed port and the current
/// process, if any.
pub(crate) struct Private {
    /// The server's directory (data, log); removed on drop.
    pub dir: tempfile::TempDir,
    /// The port, fixed for the server's lifetime so that restarts keep the address.
    pub port: u16,
    /// The running server; `None` after a stop. A mutex keeps the owner `Sync` while
    /// letting `is_running(&self)` reap the process.
    pub proc: Mutex<Option<Watched>>,
}

impl Private {
    /// Whether the server process is alive.
    pub fn is_running(&self) -> bool {
        let mut guard = self.proc.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_mut().is_some_and(Watched::is_running)
    }

    /// SIGKILLs the server (if running) and waits for it; the directory is kept.
    pub fn stop(&mut self) {
        let proc = self
            .proc
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(proc) = proc {
            proc.stop();
        }
    }

    /// Stores a freshly started process.
    pub fn set(&mut self, proc: Watched) {
        *self.proc.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(proc);
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        // Runs before the `dir` field is dropped, i.e. before the directory is removed.
        self.stop();
    }
}

/// Creates a temporary directory for a server of the given kind.
pub(crate) fn server_dir(kind: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("p2piano-{kind}-"))
        .tempdir()
}
