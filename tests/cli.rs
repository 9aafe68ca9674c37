//! The `geolb` binary: `check` on good and bad configs, and `demo` end to end.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn geolb() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_geolb"));
    cmd.env_remove("GEOLB_CONFIG").env("RUST_LOG", "warn");
    cmd
}

/// The child's stdout, line by line, read on a thread.
fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

fn check(text: &str) -> (bool, String) {
    let dir = temp_dir("geolb-cli");
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    let out = geolb()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn check_accepts_the_shipped_config() {
    let out = geolb()
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("gs-master") && stdout.contains("master order: gs-master"),
        "{stdout}"
    );
    assert!(stdout.contains("listeners: http 0.0.0.0:8080"), "{stdout}");
}

const NODE: &str = "[[nodes]]\nname = \"a\"\nurl = \"http://127.0.0.1:8081\"\nmaster = 1\n";

#[test]
fn check_names_the_key_and_line_of_each_mistake() {
    let cases: &[(String, &str)] = &[
        (
            format!("{NODE}colour = \"red\"\n"),
            "config.toml:5: key `nodes[0].colour`: unknown field `colour`",
        ),
        (
            "[[nodes]]\nname = \"a\"\nurl = \"gopher://x\"\n".into(),
            "config.toml:3: key `nodes[0].url`: invalid node URL",
        ),
        (
            format!("[health]\ninterval = \"soon\"\n{NODE}"),
            "config.toml:2: key `health.interval`: invalid duration `soon`",
        ),
        (
            format!("{NODE}\n{NODE}"),
            "config.toml:7: key `nodes[1].name`: duplicate node name `a`",
        ),
        (
            "[listen]\nhttp = [\"127.0.0.1:8080\"]\n".into(),
            "key `nodes`: no nodes",
        ),
        (
            format!("[routing]\nfailback = \"sometimes\"\n{NODE}"),
            "key `routing.failback`",
        ),
        ("this is not toml".into(), "config.toml:1"),
    ];
    for (text, want) in cases {
        let (ok, out) = check(text);
        assert!(!ok, "accepted:\n{text}");
        assert!(
            out.contains(want),
            "for\n{text}\nwanted `{want}` in:\n{out}"
        );
    }
}

#[test]
fn check_reports_a_missing_file() {
    let out = geolb()
        .args(["check", "--config", "/nonexistent/geolb.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/geolb.toml: cannot read"));
}

#[test]
fn version_and_help() {
    let out = geolb().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("geolb "));
    let out = geolb().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "check", "demo", "--config"] {
        assert!(help.contains(word), "{help}");
    }
}

/// A plain HTTP/1.1 GET over a socket, returning the whole answer.
fn http_get(addr: &str, target: &str) -> std::io::Result<String> {
    http_send(addr, "GET", target, "")
}

/// A bodiless HTTP/1.1 request over a socket (`headers`: whole lines, each ending in CRLF),
/// returning the whole answer.
fn http_send(addr: &str, method: &str, target: &str, headers: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn demo_serves_a_getmap_and_stops_cleanly_on_sigint() {
    let mut child = geolb()
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = stdout_lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut printed = String::new();
    let proxy = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("demo prints its address");
        printed.push_str(&line);
        printed.push('\n');
        if let Some(addr) = line.strip_prefix("geolb: http://") {
            break addr.to_string();
        }
    };
    // What to try is printed: a GetMap, a REST call, and how to make a node fail.
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("Ctrl-C") {
            break;
        }
    }
    for want in [
        "request=GetMap",
        "/geoserver/rest/",
        "/__sim/fail",
        "/status",
    ] {
        assert!(
            printed.contains(want),
            "the demo should show `{want}`:\n{printed}"
        );
    }
    let target = "/geoserver/wms?service=WMS&version=1.3.0&request=GetMap&layers=topp:states&width=1&height=1";
    let answer = loop {
        let answer = http_get(&proxy, target).unwrap_or_default();
        if answer.starts_with("HTTP/1.1 200") || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: image/png"),
        "{answer}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("x-node: gs-"),
        "{answer}"
    );

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        http_get(&proxy, target).is_err(),
        "nothing listens after the stop"
    );
}

/// A fresh directory under the system's temp dir.
fn temp_dir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// geolb as a child process in front of one simulated node, with a slow request in flight.
struct Child {
    child: std::process::Child,
    proxy: String,
    slow: std::thread::JoinHandle<std::io::Result<String>>,
    _dir: std::path::PathBuf,
}

async fn geolb_with_a_slow_request(node: &geolb::sim::SimNode, slow_ms: u64) -> Child {
    let dir = temp_dir("geolb-stop");
    let proxy = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "[listen]\nhttp = [\"{proxy}\"]\nshutdown_grace = \"5s\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
         [health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n[[nodes]]\nname = \"gs-master\"\nurl = \"{}\"\nmaster = 1\n",
        free_port(),
        node.url()
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let child = geolb()
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http_get(&proxy, "/geoserver/wms?request=GetMap")
        .unwrap_or_default()
        .starts_with("HTTP/1.1 200")
    {
        assert!(Instant::now() < deadline, "geolb did not start serving");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = node.hits();
    let (addr, target) = (
        proxy.clone(),
        format!("/geoserver/www/__sim/slow?ms={slow_ms}"),
    );
    let slow = std::thread::spawn(move || http_get(&addr, &target));
    while node.hits() == before {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached the node"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Child {
        child,
        proxy,
        slow,
        _dir: dir,
    }
}

fn signal(child: &std::process::Child, sig: &str) {
    assert!(Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("geolb did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_refuses_new_ones_and_exits_0() {
    let node = geolb::sim::SimNode::start("gs-master", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut g = geolb_with_a_slow_request(&node, 1500).await;
    let signalled = Instant::now();
    signal(&g.child, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(2);
    while std::net::TcpStream::connect(&g.proxy).is_ok() {
        assert!(
            Instant::now() < deadline,
            "new connections are still accepted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let answer = tokio::task::spawn_blocking(move || g.slow.join().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the in-flight request completed: {answer}"
    );
    let status = wait_exit(&mut g.child, Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "within the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let node = geolb::sim::SimNode::start("gs-master", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut g = geolb_with_a_slow_request(&node, 30_000).await;
    signal(&g.child, "-TERM");
    // The first signal is handled once the listener is closed.
    let deadline = Instant::now() + Duration::from_secs(2);
    while std::net::TcpStream::connect(&g.proxy).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the first signal was not handled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = Instant::now();
    signal(&g.child, "-INT");
    let status = wait_exit(&mut g.child, Duration::from_secs(3));
    assert!(!status.success(), "cut short: {status:?}");
    assert!(second.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_one_json_line_per_request() {
    let node = geolb::sim::SimNode::start("gs-master", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = temp_dir("geolb-log");
    let proxy = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "[listen]\nhttp = [\"{proxy}\"]\n[admin]\nlisten = \"127.0.0.1:{}\"\n[log]\nformat = \"json\"\nquery = true\n\
         [health]\ninterval = \"200ms\"\n[[nodes]]\nname = \"gs-master\"\nurl = \"{}\"\nmaster = 1\n",
        free_port(),
        node.url()
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let mut child = geolb()
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = stdout_lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http_get(&proxy, "/geoserver/wms?request=GetMap&layers=a")
        .unwrap_or_default()
        .starts_with("HTTP/1.1 200")
    {
        assert!(Instant::now() < deadline, "geolb did not start serving");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("an access-log line");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["status"] == 200 {
            break v;
        }
    };
    signal(&child, "-TERM");
    wait_exit(&mut child, Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/geoserver/wms?request=GetMap&layers=a");
    assert_eq!(line["pool"], "reads");
    assert_eq!(line["class"], "wms:GetMap");
    assert_eq!(line["node"], "gs-master");
    assert_eq!(line["client"], "127.0.0.1");
    assert!(line["bytes_out"].as_u64().unwrap() > 0);
    assert!(line["duration_ms"].as_f64().is_some());
    assert_eq!(line["retries"], 0);
    assert_eq!(line["request_id"].as_str().unwrap().len(), 32);
    assert_eq!(line["why"], "read");
    let (first_byte, total) = (
        line["first_byte_ms"].as_f64().unwrap(),
        line["duration_ms"].as_f64().unwrap(),
    );
    assert!(first_byte <= total, "{line}");
    assert_eq!(line["queued_ms"], 0.0);
    // The first request opened the connection to the node; later ones may reuse it (null).
    assert!(
        line["connect_ms"].is_f64() || line["connect_ms"].is_null(),
        "{line}"
    );
}

#[test]
fn check_takes_nodes_from_the_environment_without_a_file() {
    let out = geolb()
        .args(["check", "--config", "/nonexistent/geolb.toml"])
        .env("GEOLB_LISTEN", "0.0.0.0:80")
        .env(
            "GEOLB_NODES",
            "gs-master=http://geoserver-master:8080;master=1,geoserver=http://geoserver:8080",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("listeners: http 0.0.0.0:80"), "{stdout}");
    assert!(stdout.contains("master order: gs-master"), "{stdout}");
    let out = geolb()
        .args(["check", "--config", "/nonexistent/geolb.toml"])
        .env(
            "GEOLB_NODES",
            "gs-master=http://geoserver-master:8080;master=one",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("key `GEOLB_NODES`: entry 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_answers_for_a_running_geolb() {
    let node = geolb::sim::SimNode::start("gs-master", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let admin = format!("127.0.0.1:{}", free_port());
    let dir = temp_dir("geolb-hc");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\nhttp = [\"127.0.0.1:{}\"]\n[admin]\nlisten = \"{admin}\"\n[[nodes]]\nname = \"a\"\nurl = \"{}\"\n",
            free_port(),
            node.url()
        ),
    )
    .unwrap();
    let healthy = || {
        geolb()
            .arg("healthcheck")
            .arg("--config")
            .arg(&config)
            .status()
            .unwrap()
            .success()
    };
    assert!(!healthy(), "nothing runs yet");
    let mut child = geolb()
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !healthy() {
        assert!(Instant::now() < deadline, "never healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&child, "-TERM");
    wait_exit(&mut child, Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_post_reload_re_read_the_config_file() {
    let a = geolb::sim::SimNode::start("gs-a", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let b = geolb::sim::SimNode::start("gs-b", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = temp_dir("geolb-hup");
    let path = dir.join("config.toml");
    let admin = format!("127.0.0.1:{}", free_port());
    let head = format!("[listen]\nhttp = [\"127.0.0.1:{}\"]\n[admin]\nlisten = \"{admin}\"\n[log]\naccess = false\n", free_port());
    let node = |n: &geolb::sim::SimNode| {
        format!(
            "[[nodes]]\nname = \"{}\"\nurl = \"{}\"\n",
            n.name(),
            n.url()
        )
    };
    std::fs::write(&path, format!("{head}{}", node(&a))).unwrap();
    let mut child = geolb()
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node_count = |admin: &str| -> usize {
        let answer = http_get(admin, "/status").unwrap_or_default();
        answer
            .split_once("\r\n\r\n")
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
            .map_or(0, |v| v["nodes"].as_array().map_or(0, Vec::len))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while node_count(&admin) != 1 {
        assert!(Instant::now() < deadline, "geolb did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(&path, format!("{head}{}{}", node(&a), node(&b))).unwrap();
    signal(&child, "-HUP");
    while node_count(&admin) != 2 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let post = |admin: &str| -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(admin).unwrap();
        write!(
            s,
            "POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    std::fs::write(&path, format!("{head}{}", node(&b))).unwrap();
    assert!(post(&admin).starts_with("HTTP/1.1 200"));
    assert_eq!(node_count(&admin), 1);
    std::fs::write(
        &path,
        format!("{head}[[nodes]]\nname = \"x\"\nurl = \"nope\"\n"),
    )
    .unwrap();
    let refused = post(&admin);
    assert!(refused.starts_with("HTTP/1.1 422"), "{refused}");
    assert!(refused.contains("key `nodes[0].url`"), "{refused}");
    assert_eq!(node_count(&admin), 1, "the old config stays");
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_validates_certificates_and_warns_about_expiry() {
    let dir = temp_dir("geolb-certs");
    let write = |file: &str, params: rcgen::CertificateParams| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{file}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    };
    write(
        "fresh",
        rcgen::CertificateParams::new(vec!["fresh.test".into()]).unwrap(),
    );
    let mut old = rcgen::CertificateParams::new(vec!["old.test".into()]).unwrap();
    old.not_before = rcgen::date_time_ymd(2000, 1, 1);
    old.not_after = rcgen::date_time_ymd(2001, 1, 1);
    write("old", old);
    let config = |files: &[&str]| {
        let mut text = "[listen]\nhttps = [\"127.0.0.1:8443\"]\n[[nodes]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n".to_string();
        for f in files {
            text += &format!(
                "[[tls.certs]]\ncert = \"{0}/{f}.crt\"\nkey = \"{0}/{f}.key\"\n",
                dir.display()
            );
        }
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        geolb()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let out = config(&["fresh"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("TLS listeners: https 127.0.0.1:8443 with 1 certificate(s)"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
    let out = config(&["fresh", "old"]);
    assert!(
        out.status.success(),
        "an expired certificate is a warning, not an error"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: tls.certs[1].cert") && stderr.contains("expired 2001-01-01"),
        "{stderr}"
    );
    std::fs::write(dir.join("fresh.key"), "garbage").unwrap();
    let out = config(&["fresh"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("key `tls.certs[0].key`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_raises_its_file_limit_and_caps_per_request_log_lines() {
    let node = geolb::sim::SimNode::start("gs-master", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = temp_dir("geolb-limits");
    let proxy = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "[listen]\nhttp = [\"{proxy}\"]\n[admin]\nlisten = \"127.0.0.1:{}\"\n[log]\naccess = false\n\
         [health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n[[nodes]]\nname = \"gs-master\"\nurl = \"{}\"\nmaster = 1\n",
        free_port(),
        node.url()
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let mut child = geolb()
        .env("RUST_LOG", "geolb=info")
        .env("NO_COLOR", "1")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The default cap comes from the open-file limit, raised to the hard limit.
    let caps = lines
        .iter()
        .find(|l| l.contains("client connection caps"))
        .expect("the caps are logged at start");
    let hard = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap().1;
    let want = geolb::config::derived_max_connections(hard);
    assert!(
        caps.contains(&format!("max_connections={want}")),
        "{caps} (hard limit {hard})"
    );
    // 200 refused requests (an encoded slash) log at most 20 lines a second, then say how many
    // were held back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http_get(&proxy, "/geoserver/wms?request=GetMap")
        .unwrap_or_default()
        .starts_with("HTTP/1.1 200")
    {
        assert!(Instant::now() < deadline, "geolb did not start serving");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    for _ in 0..200 {
        let answer = http_get(&proxy, "/geoserver/rest%2Fworkspaces").unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    let seconds = started.elapsed().as_secs() + 2;
    // One more, in a later second: it reports what was held back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = http_get(&proxy, "/geoserver/rest%2Fworkspaces");
    signal(&child, "-TERM");
    wait_exit(&mut child, Duration::from_secs(10));
    // Every line up to the end of its stderr.
    let refused: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("request refused"))
        .collect();
    assert!(
        refused.len() as u64 <= 20 * (seconds + 1) && refused.len() < 200,
        "{} lines in {seconds} s",
        refused.len()
    );
    assert!(
        refused
            .iter()
            .any(|l| l.contains("held_back=") && !l.contains("held_back=0")),
        "{refused:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_password_comes_from_the_environment_and_is_never_shown_or_logged() {
    use base64::Engine;
    const PASSWORD: &str = "env-s3cret-pw";
    let any = "127.0.0.1:0".parse().unwrap();
    let master = geolb::sim::SimNode::start("gs-master", any).await.unwrap();
    let replica = geolb::sim::SimNode::start("gs-replica", any).await.unwrap();
    for node in [&master, &replica] {
        node.set_credentials("admin", PASSWORD);
    }
    let dir = temp_dir("geolb-reload-pw");
    let (proxy, admin) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let config = format!(
        "[listen]\nhttp = [\"{proxy}\"]\n[admin]\nlisten = \"{admin}\"\ntoken = \"t0ken\"\n\
         [health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\n[catalog_reload]\nuser = \"admin\"\n\
         [[nodes]]\nname = \"gs-master\"\nurl = \"{}\"\nmaster = 1\n\
         [[nodes]]\nname = \"gs-replica\"\nurl = \"{}\"\n",
        master.url(),
        replica.url()
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let mut child = geolb()
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("GEOLB_RELOAD_PASSWORD", PASSWORD)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes as geolb writes (a full pipe would stall it).
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.expect("piped").read_to_string(&mut text);
            text
        })
    };
    use std::io::Read;
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + Duration::from_secs(10);
    let compact = |text: String| text.replace(": ", ":");
    while compact(http_get(&admin, "/status").unwrap_or_default())
        .matches("\"state\":\"up\"")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "geolb did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bearer = "Authorization: Bearer t0ken\r\n";
    let started = http_send(&admin, "POST", "/cluster/reload", bearer).unwrap();
    assert!(started.starts_with("HTTP/1.1 202"), "{started}");
    let progress = loop {
        let progress = compact(http_get(&admin, "/cluster/reload").unwrap());
        if !progress.contains("\"state\":\"running\"") {
            break progress;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(20),
            "{progress}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(progress.contains("\"state\":\"done\""), "{progress}");
    // The replica was reloaded with the environment's password; the master candidate skipped.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{PASSWORD}"));
    assert_eq!(replica.reloads(), 1);
    assert_eq!(replica.last_reload_auth(), Some(format!("Basic {basic}")));
    assert_eq!(master.reloads(), 0);
    // Nothing geolb shows or logs holds the password, plain or encoded.
    let mut shown = progress;
    for target in ["/status", "/", "/metrics"] {
        shown += &http_get(&admin, target).unwrap();
    }
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
    let logs = stdout.join().unwrap() + &stderr.join().unwrap();
    assert!(logs.contains("rolling catalog reload done"), "{logs}");
    for text in [&shown, &logs] {
        assert!(!text.contains(PASSWORD) && !text.contains(&basic), "{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
