//! Runs the JavaScript conformance suite (tests/js, the real `socket.io-client` from npm)
//! against two edges and the split services over real NATS and the MongoDB-wire server.
//! `make test` installs the npm packages first (`make test-deps`).

use crate::support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::{Cluster, Mode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_client_conformance() {
    let cluster = Cluster::start(Mode::Nats).await;
    run_node_suite(&cluster, "conformance.test.js", &[]).await;
}

/// The life of a page (reload, tab close, blip, own events, the room listing) with the
/// default grace period, which the suite's timings are about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_client_page_lifecycle() {
    let grace = p2piano_config::Config::default().leave_grace;
    let cluster = Cluster::start_configured(Mode::Nats, Default::default(), |c| {
        c.leave_grace = grace;
    })
    .await;
    run_node_suite(
        &cluster,
        "lifecycle.test.js",
        &[("GRACE_MS", grace.as_millis().to_string())],
    )
    .await;
}

/// Runs one file of tests/js with `node --test` against the cluster's two edges.
async fn run_node_suite(cluster: &Cluster, file: &str, env: &[(&str, String)]) {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        js.join("node_modules/socket.io-client").exists(),
        "npm packages missing: run `make test-deps` (npm ci in {})",
        js.display()
    );
    let (a, b) = (cluster.edge(0), cluster.edge(1));
    // The suite bounds each wait itself; this bound only keeps a wedged run from hanging CI,
    // and what the suite printed until then is shown either way.
    let mut child = tokio::process::Command::new("node")
        .arg("--test")
        .arg("--test-reporter=spec")
        // A failed test may leave a socket open; exit when the tests are done regardless.
        .arg("--test-force-exit")
        .arg(file)
        .current_dir(&js)
        .env("EDGE_A", format!("http://127.0.0.1:{a}"))
        .env("EDGE_B", format!("http://127.0.0.1:{b}"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let stdout = tokio::spawn(read_all(child.stdout.take()));
    let stderr = tokio::spawn(read_all(child.stderr.take()));
    let status = match tokio::time::timeout(Duration::from_secs(180), child.wait()).await {
        Ok(status) => Some(status.expect("node exit status")),
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    };
    let (stdout, stderr) = (stdout.await.unwrap(), stderr.await.unwrap());
    println!("{stdout}\n{stderr}");
    match status {
        Some(s) => assert!(
            s.success(),
            "socket.io-client suite {file} failed:\n{stdout}\n{stderr}"
        ),
        None => panic!("the node suite {file} did not finish within 180 s:\n{stdout}\n{stderr}"),
    }
}

async fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let mut text = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut text).await;
    }
    String::from_utf8_lossy(&text).into_owned()
}
