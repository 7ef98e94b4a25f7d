//! `loadgen bench-report`: turns the JSON lines of one `make bench` run into the tables of
//! `BENCHMARKS.md` (between its `<!-- bench:begin -->` and `<!-- bench:end -->` markers,
//! so that the prose around them is kept) and the latency plot.
//!
//! Every figure comes from the results file; the ratios are to the reference server
//! measured in the same run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::plot::{self, Series};

/// Marker lines delimiting the generated part of the Markdown file.
pub const BEGIN: &str = "<!-- bench:begin -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- bench:end -->";

/// The targets in the order of the tables.
const TARGETS: [&str; 3] = ["reference", "all", "split"];

/// One run's line.
#[derive(Debug, Clone)]
pub struct Run {
    /// `fanout`, `idle`, `join-storm`, `reconnect`.
    pub scenario: String,
    /// `reference`, `all`, `split`.
    pub label: String,
    /// The run's parameters.
    pub params: Value,
    /// The run's results.
    pub results: Value,
}

impl Run {
    fn p(&self, key: &str) -> f64 {
        self.params[key].as_f64().unwrap_or(0.0)
    }
    fn r(&self, key: &str) -> f64 {
        self.results[key].as_f64().unwrap_or(0.0)
    }
    fn lat_ms(&self, key: &str, q: &str) -> f64 {
        self.results[key][q].as_f64().unwrap_or(f64::NAN) / 1000.0
    }
    /// Deliveries per second the fan-out run offered: each of `users` players sends `rate`
    /// events/s to the `users - 1` others.
    pub fn offered(&self) -> f64 {
        self.p("rooms") * self.p("users") * (self.p("users") - 1.0) * self.p("rate")
    }
}

/// The results file: the machine line and the runs.
#[derive(Debug, Default)]
pub struct Results {
    /// `{"machine": {...}}`'s object.
    pub machine: Value,
    /// Every run, in order.
    pub runs: Vec<Run>,
}

/// Parses the JSON lines of a results file.
pub fn parse(text: &str) -> Result<Results, String> {
    let mut out = Results::default();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        if let Some(m) = v.get("machine") {
            out.machine = m.clone();
            continue;
        }
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        out.runs.push(Run {
            scenario: text("scenario"),
            label: text("label"),
            params: v["params"].clone(),
            results: v["results"].clone(),
        });
    }
    Ok(out)
}

fn runs<'a>(res: &'a Results, scenario: &'a str) -> impl Iterator<Item = &'a Run> {
    res.runs.iter().filter(move |r| r.scenario == scenario)
}

/// The fan-out runs of each (target, rooms), in the order run: a point of the sweep that
/// was repeated has several.
fn fanout_points(res: &Results) -> BTreeMap<(usize, u64), Vec<&Run>> {
    let mut points: BTreeMap<(usize, u64), Vec<&Run>> = BTreeMap::new();
    for r in runs(res, "fanout") {
        points
            .entry((order(&r.label), r.p("rooms") as u64))
            .or_default()
            .push(r);
    }
    points
}

/// The median of `xs` (the mean of the two middle values for an even count); NaN when empty.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The run that stands for a point in the sweep's table and plot: of a repeated point, the
/// run of the median CPU per delivery (the lower middle one for an even count), so that one
/// unlucky run does not speak for the point.
fn representative<'a>(point: &[&'a Run]) -> &'a Run {
    let mut sorted: Vec<&Run> = point.to_vec();
    sorted.sort_by(|a, b| {
        a.r("server_cpu_s_per_million")
            .total_cmp(&b.r("server_cpu_s_per_million"))
    });
    sorted[(sorted.len() - 1) / 2]
}

fn f(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "–".into()
    }
}

fn int(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

/// The best delivery rate of each target over the sweep.
pub fn peaks(res: &Results) -> BTreeMap<String, f64> {
    let mut best = BTreeMap::new();
    for r in runs(res, "fanout") {
        let e = best.entry(r.label.clone()).or_insert(0.0f64);
        *e = e.max(r.r("delivered_per_s"));
    }
    best
}

/// The Markdown tables.
pub fn markdown(res: &Results, plot_path: Option<&str>) -> String {
    let mut md = String::new();
    let m = &res.machine;
    let s = |k: &str| m[k].as_str().unwrap_or("?").to_owned();
    let _ = writeln!(
        md,
        "Measured {} on {} ({} cores, {} GiB, Linux {}, open-file limit {}), {}, commit `{}`.\n",
        s("date"),
        s("cpu"),
        m["cores"],
        m["mem_gib"],
        s("kernel"),
        s("nofile"),
        s("rustc"),
        s("commit"),
    );

    let peaks = peaks(res);
    let reference = peaks.get("reference").copied().unwrap_or(f64::NAN);
    md.push_str("### Fan-out: the load sweep\n\n");
    md.push_str(
        "Rooms of 4 players; each player sends 50 notes/s (`KEY_DOWN`/`KEY_UP` in turn) to the \
         other three. *Offered* is the deliveries/s asked for; *delivered* what arrived. \
         Latency is from the sender's write to the receiver's read (ms). CPU is that of every \
         process a note passes through (split: both edges and nats-server), per million \
         deliveries. *Busy* is how busy the whole machine was while the notes were sent, in \
         percent of all its cores (`/proc/stat`: the load generator, the servers and \
         anything else).\n\n",
    );
    md.push_str("| target | rooms | offered/s | delivered/s | p50 | p90 | p99 | p99.9 | max | lost | reordered | CPU s/M | busy % |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let points = fanout_points(res);
    let mut sweep: Vec<&Run> = points.values().map(|p| representative(p)).collect();
    sweep.sort_by(|a, b| {
        (a.p("rooms") as u64, order(&a.label)).cmp(&(b.p("rooms") as u64, order(&b.label)))
    });
    for r in &sweep {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.p("rooms"),
            int(r.offered()),
            int(r.r("delivered_per_s")),
            f(r.lat_ms("latency_us", "p50"), 2),
            f(r.lat_ms("latency_us", "p90"), 2),
            f(r.lat_ms("latency_us", "p99"), 2),
            f(r.lat_ms("latency_us", "p999"), 2),
            f(r.lat_ms("latency_us", "max"), 1),
            int(r.r("lost")),
            int(r.r("reordered")),
            f(r.r("server_cpu_s_per_million"), 1),
            f(
                r.results["machine_busy_pct"].as_f64().unwrap_or(f64::NAN),
                0
            ),
        );
    }
    md.push_str("\n**Peak deliveries/s and ratio to the reference** (same run, same loads):\n\n");
    md.push_str("| target | peak delivered/s | ratio | p99 at about half the peak (ms) | lost (all runs) | reordered (all runs) |\n|---|---:|---:|---:|---:|---:|\n");
    for t in TARGETS {
        let Some(&peak) = peaks.get(t) else { continue };
        let mine: Vec<&&Run> = sweep.iter().filter(|r| r.label == t).collect();
        let half = mine
            .iter()
            .min_by(|a, b| {
                let da = (a.offered() - peak / 2.0).abs();
                let db = (b.offered() - peak / 2.0).abs();
                da.total_cmp(&db)
            })
            .map(|r| {
                format!(
                    "{} (at {}/s)",
                    f(r.lat_ms("latency_us", "p99"), 2),
                    int(r.offered())
                )
            })
            .unwrap_or_else(|| "–".into());
        let all_runs = runs(res, "fanout").filter(|r| r.label == t);
        let (lost, reordered) = all_runs.fold((0.0, 0.0), |(l, o), r| {
            (l + r.r("lost"), o + r.r("reordered"))
        });
        let _ = writeln!(
            md,
            "| {t} | {} | {} | {half} | {} | {} |",
            int(peak),
            f(peak / reference, 2),
            int(lost),
            int(reordered)
        );
    }
    if let Some(p) = plot_path {
        let _ = writeln!(md, "\n![Latency percentiles against offered load]({p})\n");
    }
    repeated_points(&mut md, &points);

    md.push_str("\n### Idle sockets\n\n");
    md.push_str(
        "Sockets opened (4 per room) and held. *RSS/socket* is the growth of the serving \
         processes' resident memory from after the REST calls to after the joins, divided \
         by the sockets; *with session* counts from before the REST calls, so it includes \
         the session each player created.\n\n",
    );
    md.push_str("| target | sockets | failed | connects/s | join p50 (ms) | join p99 (ms) | RSS/socket (KiB) | with session (KiB) | RSS after (MiB) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for t in TARGETS {
        for r in runs(res, "idle").filter(|r| r.label == t) {
            let _ = writeln!(
                md,
                "| {t} | {} | {} | {} | {} | {} | {} | {} | {} |",
                int(r.r("joined")),
                int(r.r("failed")),
                int(r.r("connect_per_s")),
                f(r.lat_ms("join_latency_us", "p50"), 2),
                f(r.lat_ms("join_latency_us", "p99"), 2),
                f(r.r("server_rss_per_conn_kib"), 2),
                f(r.r("server_rss_per_conn_with_session_kib"), 2),
                f(r.r("server_rss_after_kib") / 1024.0, 1),
            );
        }
    }

    md.push_str("\n### Join storm\n\n");
    md.push_str(
        "Players arrive at a fixed rate; every fourth creates a room (`POST /api/room`), \
         the others read it for a session (`GET /api/room/:id`); then each joins over the \
         socket (upgrade, namespace connect, `ROOM_JOIN`). Latencies in ms.\n\n",
    );
    md.push_str("| target | joined | failed | joins/s | create p50 | create p99 | get p50 | get p99 | socket join p50 | socket join p99 | whole p99 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for t in TARGETS {
        for r in runs(res, "join-storm").filter(|r| r.label == t) {
            let _ = writeln!(
                md,
                "| {t} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                int(r.r("joined")),
                int(r.r("failed")),
                f(r.r("joins_per_s"), 1),
                f(r.lat_ms("create_latency_us", "p50"), 2),
                f(r.lat_ms("create_latency_us", "p99"), 2),
                f(r.lat_ms("get_latency_us", "p50"), 2),
                f(r.lat_ms("get_latency_us", "p99"), 2),
                f(r.lat_ms("socket_join_latency_us", "p50"), 2),
                f(r.lat_ms("socket_join_latency_us", "p99"), 2),
                f(r.lat_ms("total_latency_us", "p99"), 2),
            );
        }
    }

    md.push_str("\n### Reconnect after an edge drains\n\n");
    md.push_str(
        "Every socket starts on edge 1 of the split deployment; edge 1 gets SIGTERM, closes \
         its sockets with 1012 and exits; its clients reconnect to edge 2 with the same \
         cookie. *Leave/join seen* are `USER_DISCONNECT`/`USER_CONNECT` events received by \
         anyone after the signal (a return within the grace period should be announced to \
         nobody).\n\n",
    );
    md.push_str("| target | sockets | moved | back | not back | all back after (ms) | back p50 (ms) | back p99 (ms) | leave seen | join seen |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in runs(res, "reconnect") {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            int(r.r("joined")),
            int(r.r("expected_to_move")),
            int(r.r("back")),
            int(r.r("not_back")),
            f(r.r("time_to_all_back_ms"), 0),
            f(r.lat_ms("back_from_signal_us", "p50"), 1),
            f(r.lat_ms("back_from_signal_us", "p99"), 1),
            int(r.r("user_disconnect_seen")),
            int(r.r("user_connect_seen")),
        );
    }
    md
}

/// The table of the points run more than once: every run's CPU per delivery and p99, their
/// medians, and the medians' ratios to the reference's at the same point.
fn repeated_points(md: &mut String, points: &BTreeMap<(usize, u64), Vec<&Run>>) {
    let mut rooms: Vec<u64> = points
        .iter()
        .filter(|(_, runs)| runs.len() > 1)
        .map(|((_, rooms), _)| *rooms)
        .collect();
    rooms.sort_unstable();
    rooms.dedup();
    if rooms.is_empty() {
        return;
    }
    md.push_str(
        "\n**Repeated points.** These points were run several times, each time on fresh \
         processes and with the targets in turn; the sweep above shows each one's run of \
         median CPU. Ratios are of the medians to the reference's at the same point.\n\n",
    );
    md.push_str("| rooms | offered/s | target | CPU s/M, each run | median | ratio | p99 (ms), each run | median | ratio | machine busy %, each run |\n");
    md.push_str("|---:|---:|---|---|---:|---:|---|---:|---:|---|\n");
    let cpu = |r: &&Run| r.r("server_cpu_s_per_million");
    let p99 = |r: &&Run| r.lat_ms("latency_us", "p99");
    let busy = |r: &&Run| r.results["machine_busy_pct"].as_f64().unwrap_or(f64::NAN);
    for n in rooms {
        let of = |t: usize| points.get(&(t, n));
        let base = of(0).map(|runs| {
            (
                median(runs.iter().map(cpu).collect()),
                median(runs.iter().map(p99).collect()),
            )
        });
        for (t, name) in TARGETS.iter().enumerate() {
            let Some(runs) = of(t) else { continue };
            let list = |g: &dyn Fn(&&Run) -> f64, digits| {
                runs.iter()
                    .map(|r| f(g(r), digits))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let (c, l) = (
                median(runs.iter().map(cpu).collect()),
                median(runs.iter().map(p99).collect()),
            );
            let ratio =
                |x: f64, b: Option<f64>| b.map_or("–".into(), |b| format!("{} ×", f(x / b, 2)));
            let _ = writeln!(
                md,
                "| {n} | {} | {name} | {} | {} | {} | {} | {} | {} | {} |",
                int(runs[0].offered()),
                list(&cpu, 1),
                f(c, 1),
                ratio(c, base.map(|b| b.0)),
                list(&p99, 2),
                f(l, 2),
                ratio(l, base.map(|b| b.1)),
                list(&busy, 0),
            );
        }
    }
}

fn order(label: &str) -> usize {
    TARGETS
        .iter()
        .position(|t| *t == label)
        .unwrap_or(TARGETS.len())
}

/// Replaces the part of `doc` between the markers with `generated` (appending the markers
/// and the part when the document has none).
pub fn splice(doc: &str, generated: &str) -> String {
    let block = format!("{BEGIN}\n{generated}\n{END}");
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{block}{}", &doc[..b], &doc[e + END.len()..])
        }
        _ => {
            let mut out = doc.trim_end().to_owned();
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(&block);
            out.push('\n');
            out
        }
    }
}

/// The latency series of the plot: p50 and p99 of each target against offered load.
pub fn series(res: &Results) -> Vec<Series> {
    let mut out = Vec::new();
    for t in TARGETS {
        for (q, name) in [("p50", "p50"), ("p99", "p99")] {
            let mut points: Vec<(f64, f64)> = fanout_points(res)
                .values()
                .map(|p| representative(p))
                .filter(|r| r.label == t)
                .map(|r| (r.offered(), r.lat_ms("latency_us", q)))
                .filter(|(_, y)| y.is_finite() && *y > 0.0)
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !points.is_empty() {
                out.push(Series {
                    name: format!("{t} {name}"),
                    target: order(t),
                    dashed: q == "p99",
                    points,
                });
            }
        }
    }
    out
}

/// Reads `results`, rewrites `markdown_path` and draws `plot_path`.
pub fn run(results: &Path, markdown_path: &Path, plot_path: Option<&Path>) -> Result<(), String> {
    let text =
        std::fs::read_to_string(results).map_err(|e| format!("{}: {e}", results.display()))?;
    let res = parse(&text)?;
    if res.runs.is_empty() {
        return Err(format!("{}: no runs", results.display()));
    }
    let rel_plot = plot_path.map(|p| p.to_string_lossy().into_owned());
    let generated = markdown(&res, rel_plot.as_deref());
    let doc = std::fs::read_to_string(markdown_path).unwrap_or_default();
    std::fs::write(markdown_path, splice(&doc, &generated))
        .map_err(|e| format!("{}: {e}", markdown_path.display()))?;
    if let Some(p) = plot_path {
        plot::draw(p, &series(&res))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &str = r#"{"machine":{"cpu":"Test CPU","cores":2,"mem_gib":24.0,"kernel":"6.1","rustc":"rustc 1.95","date":"2026-11-29","commit":"abc","nofile":"20000"}}
{"scenario":"fanout","label":"reference","params":{"rooms":10,"users":4,"rate":50},"results":{"delivered_per_s":6000.0,"latency_us":{"p50":150,"p99":700},"lost":0,"reordered":0}}
{"scenario":"fanout","label":"all","params":{"rooms":10,"users":4,"rate":50},"results":{"delivered_per_s":5990.0,"latency_us":{"p50":190,"p99":850},"lost":0,"reordered":0}}
{"scenario":"fanout","label":"reference","params":{"rooms":40,"users":4,"rate":50},"results":{"delivered_per_s":24000.0,"latency_us":{"p50":200,"p99":900},"lost":0,"reordered":0}}
{"scenario":"idle","label":"all","params":{"conns":100},"results":{"joined":100,"failed":0,"server_rss_per_conn_kib":9.5}}
"#;

    #[test]
    fn tables_hold_the_measured_figures_and_ratios() {
        let res = parse(LINES).unwrap();
        assert_eq!(res.runs.len(), 4);
        assert_eq!(res.runs[0].offered(), 6000.0);
        let md = markdown(&res, Some("docs/x.png"));
        assert!(md.contains("Test CPU (2 cores"), "{md}");
        assert!(md.contains("| all | 10 | 6,000 | 5,990 | 0.19 |"), "{md}");
        // Peak of the reference is 24,000; all's peak 5,990 is 0.25 of it.
        assert!(md.contains("| reference | 24,000 | 1.00 |"), "{md}");
        assert!(md.contains("| all | 5,990 | 0.25 |"), "{md}");
        assert!(md.contains("| all | 100 | 0 |"), "{md}");
        assert!(md.contains("![Latency percentiles"), "{md}");
        let s = series(&res);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].points, vec![(6000.0, 0.15), (24000.0, 0.2)]);
    }

    #[test]
    fn a_repeated_point_is_shown_by_its_median_run_with_every_run_listed() {
        let line = |label: &str, cpu: f64, p99: u64| {
            format!(
                r#"{{"scenario":"fanout","label":"{label}","params":{{"rooms":100,"users":4,"rate":50}},"results":{{"delivered_per_s":60000.0,"latency_us":{{"p50":100,"p99":{p99}}},"lost":0,"reordered":1,"server_cpu_s_per_million":{cpu}}}}}"#
            )
        };
        let text = [
            line("reference", 6.0, 1000),
            line("split", 9.0, 2000),
            line("reference", 8.0, 1200),
            line("split", 20.0, 9000),
            line("reference", 7.0, 900),
            line("split", 10.0, 1800),
        ]
        .join("\n");
        let res = parse(&text).unwrap();
        let md = markdown(&res, None);
        // The sweep has one row per point: the run of median CPU (split's 10.0, not 20.0).
        assert_eq!(md.matches("| split | 100 |").count(), 1, "{md}");
        assert!(
            md.contains("| split | 100 | 60,000 | 60,000 | 0.10 | – | 1.80 |"),
            "{md}"
        );
        assert!(md.contains("| 100 | 60,000 | reference | 6.0, 8.0, 7.0 | 7.0 | 1.00 × | 1.00, 1.20, 0.90 | 1.00 | 1.00 × |"), "{md}");
        assert!(md.contains("| 100 | 60,000 | split | 9.0, 20.0, 10.0 | 10.0 | 1.43 × | 2.00, 9.00, 1.80 | 2.00 | 2.00 × | –, –, – |"), "{md}");
        // Lost and reordered count every run, not only the ones shown.
        assert!(
            md.contains("| split | 60,000 | 1.00 | 1.80 (at 60,000/s) | 0 | 3 |"),
            "{md}"
        );
        assert_eq!(series(&res)[2].points, vec![(60000.0, 0.1)]);
        assert!(median(vec![]).is_nan());
        assert_eq!(median(vec![1.0, 4.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn splicing_keeps_the_prose_around_the_markers() {
        let doc = format!("# Title\n\nintro\n\n{BEGIN}\nold\n{END}\n\nafter\n");
        let out = splice(&doc, "new");
        assert_eq!(
            out,
            format!("# Title\n\nintro\n\n{BEGIN}\nnew\n{END}\n\nafter\n")
        );
        let fresh = splice("", "t");
        assert_eq!(fresh, format!("{BEGIN}\nt\n{END}\n"));
        assert!(splice("# T\n", "t").starts_with("# T\n\n<!--"));
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(int(1234567.0), "1,234,567");
        assert_eq!(int(999.0), "999");
        assert_eq!(int(f64::NAN), "–");
        assert_eq!(f(f64::INFINITY, 2), "–");
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let e = parse("{}\nnot json\n").unwrap_err();
        assert!(e.starts_with("line 2"), "{e}");
    }
}
