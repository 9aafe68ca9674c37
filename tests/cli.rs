//! The `geolb` binary: `check` on good and bad configs, and `demo` end to end.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn geolb() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_geolb"));
    cmd.env_remove("GEOLB_CONFIG").env("RUST_LOG", "warn");
    cmd
}

fn check(text: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!(
        "geolb-cli-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
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

/// A plain HTTP/1.1 GET over a socket, returning the status line and headers.
fn http_get(addr: &str, target: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
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
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
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
