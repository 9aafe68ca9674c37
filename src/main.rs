//! The `geolb` command: run, check a config, or start the demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use geolb::config::{Config, ConfigError};
use geolb::server;
use geolb::sim::{Catalog, SimNode};

#[derive(Parser)]
#[command(
    name = "geolb",
    version,
    about = "A load balancer for GeoServer clusters: OGC reads on every healthy node, writes to one master with failover"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        default_value = "config.toml",
        env = "GEOLB_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the balancer (the default).
    Run,
    /// Validate the configuration and print a summary; exit non-zero if it is invalid.
    Check,
    /// Start three simulated GeoServer nodes and geolb in front of them: no GeoServer needed.
    Demo {
        /// Where geolb listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the admin listener listens.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        /// How far the replicas lag behind the master's catalog (e.g. `500ms`, `2s`).
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        lag: std::time::Duration,
    },
    /// Exit 0 when the running geolb's admin listener answers (for container health checks).
    Healthcheck,
    /// Run one simulated GeoServer node (for trying configs and for the load benchmark).
    Sim {
        /// The name it gives in its `X-Node` header (default: the host's name, as Docker sets
        /// it to the container's id, so scaled replicas tell themselves apart; else `gs-sim`).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => match Config::load(&cli.config).and_then(|config| {
            // The certificates and keys too, as a start would load them.
            geolb::tls::check(&config).map_err(|e| ConfigError {
                file: Some(cli.config.display().to_string()),
                ..e
            })?;
            Ok(config)
        }) {
            Ok(config) => {
                // Write errors (a closed pipe: `geolb check | head -1`) are not worth a panic.
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}: valid", cli.config.display());
                let _ = write!(out, "{}", config.summary());
                warn_expiring(&config);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run => match Config::load(&cli.config) {
            Ok(config) => {
                geolb::memory::give_back_freed_memory();
                block_on(run(config, cli.config.clone()))
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Demo { listen, admin, lag } => block_on(demo(listen, admin, lag)),
        Command::Sim { name, listen } => block_on(sim(name.unwrap_or_else(host_name), listen)),
        Command::Healthcheck => match Config::load(&cli.config) {
            Ok(config) => healthcheck(config.admin.listen),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn stop_signals() -> Option<server::Signals> {
    server::Signals::new()
        .map_err(|e| eprintln!("error: cannot listen for signals: {e}"))
        .ok()
}

/// Warns about certificates that expire within 14 days (or already have).
fn warn_expiring(config: &Config) {
    let soon = std::time::SystemTime::now() + std::time::Duration::from_secs(14 * 24 * 3600);
    for (i, expiry) in geolb::tls::expiries(&config.tls.certs)
        .into_iter()
        .enumerate()
    {
        if let Some(at) = expiry.filter(|at| *at < soon) {
            let when = humantime::format_rfc3339_seconds(at);
            let state = if at < std::time::SystemTime::now() {
                "expired"
            } else {
                "expires"
            };
            eprintln!(
                "warning: tls.certs[{i}].cert ({}) {state} {when}",
                config.tls.certs[i].cert.display()
            );
        }
    }
}

/// `GET /status` on the admin listener (loopback when it listens on every address), 2 s at most.
fn healthcheck(admin: SocketAddr) -> ExitCode {
    use std::io::{Read, Write};
    let mut addr = admin;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let timeout = std::time::Duration::from_secs(2);
    let answer = (|| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        write!(
            s,
            "GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut head = [0u8; 16];
        let n = s.read(&mut head)?;
        Ok(String::from_utf8_lossy(&head[..n]).into_owned())
    })();
    match answer {
        Ok(line) if line.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(line) => {
            eprintln!("unhealthy: {addr} answered {line:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn block_on(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(fut),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, file: PathBuf) -> ExitCode {
    let Some(mut signals) = stop_signals() else {
        return ExitCode::FAILURE;
    };
    // Many client connections (each may need one to a node) need many file descriptors.
    server::raise_open_file_limit();
    let running = match server::start_with_file(config, Some(file)).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SIGHUP reloads the config file (an invalid one is refused and logged); SIGINT/SIGTERM stop.
    while signals.recv().await == server::Signal::Reload {
        tracing::info!("SIGHUP: reloading the configuration");
        let _ = running.reload(geolb::control::Source::File).await;
    }
    tracing::info!("stopping: no new connections; letting in-flight requests finish (a second signal exits at once)");
    tokio::select! {
        _ = running.shutdown() => ExitCode::SUCCESS,
        _ = signals.stop() => {
            tracing::warn!("second signal: exiting now, cutting in-flight requests");
            ExitCode::FAILURE
        }
    }
}

/// The host's name (`HOSTNAME`, or `/etc/hostname`), or `gs-sim`.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "gs-sim".to_string())
}

async fn sim(name: String, listen: SocketAddr) -> ExitCode {
    let Some(mut signals) = stop_signals() else {
        return ExitCode::FAILURE;
    };
    match SimNode::start(&name, listen).await {
        Ok(node) => {
            println!("simulated GeoServer node {name} on {}", node.url());
            signals.stop().await;
            // Like Tomcat on SIGTERM: requests in progress finish (within docker's 10 s).
            node.stop(std::time::Duration::from_secs(5)).await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(listen: SocketAddr, admin: SocketAddr, lag: std::time::Duration) -> ExitCode {
    let Some(mut signals) = stop_signals() else {
        return ExitCode::FAILURE;
    };
    // One catalog, as in a GeoServer JMS cluster: the master sees a change at once, the
    // replicas `lag` later.
    let catalog = Catalog::with_layers(&["topp:states"]);
    let mut nodes = Vec::new();
    for (name, lag) in [
        ("gs-master", std::time::Duration::ZERO),
        ("gs-replica-1", lag),
        ("gs-replica-2", lag),
    ] {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        match SimNode::start_in(name, any, catalog.clone(), lag).await {
            Ok(node) => nodes.push(node),
            Err(e) => {
                eprintln!("error: cannot start a simulated node: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // The simulated nodes' REST password (admin / geoserver), for the rolling catalog reload.
    let password_file =
        std::env::temp_dir().join(format!("geolb-demo-{}.password", std::process::id()));
    if let Err(e) = std::fs::write(&password_file, "geoserver") {
        eprintln!("error: cannot write {}: {e}", password_file.display());
        return ExitCode::FAILURE;
    }
    let password_path = toml::Value::String(password_file.display().to_string());
    let text = format!(
        r#"
[listen]
http = ["{listen}"]
[admin]
listen = "{admin}"
token = "demo"
[health]
interval = "1s"
timeout = "500ms"
[catalog_reload]
user = "admin"
password_file = {password_path}
masters = "last"
[[nodes]]
name = "gs-master"
url = "{}"
master = 1
[[nodes]]
name = "gs-replica-1"
url = "{}"
master = 2
[[nodes]]
name = "gs-replica-2"
url = "{}"
"#,
        nodes[0].url(),
        nodes[1].url(),
        nodes[2].url()
    );
    let code = demo_with(&text, &nodes, lag, &mut signals).await;
    let _ = std::fs::remove_file(&password_file);
    for node in &nodes {
        node.kill().await;
    }
    code
}

/// Runs geolb with the demo `text` in front of `nodes` and prints the walkthrough until a signal.
async fn demo_with(
    text: &str,
    nodes: &[SimNode],
    lag: std::time::Duration,
    signals: &mut server::Signals,
) -> ExitCode {
    let config = match Config::parse(text) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: the demo config is invalid: {e}");
            return ExitCode::FAILURE;
        }
    };
    server::raise_open_file_limit();
    let running = match server::start(config).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!(
                "error: {e} (try `geolb demo --listen 127.0.0.1:8081 --admin 127.0.0.1:9091`)"
            );
            return ExitCode::FAILURE;
        }
    };
    let (proxy, admin, master) = (running.http[0], running.admin, nodes[0].url());
    let lag_text = humantime::format_duration(lag);
    println!(
        "geolb demo: three simulated GeoServer nodes behind geolb, sharing one catalog\n\
         \x20 gs-master     {}  master candidate #1, sees catalog changes at once\n\
         \x20 gs-replica-1  {}  master candidate #2: takes the writes when gs-master is down\n\
         \x20 gs-replica-2  {}  replica (reads only)\n\
         \x20 the replicas see a catalog change {lag_text} after the master (--lag)\n\
         geolb: http://{proxy}\n\
         admin: http://{admin}/status (token: demo)\n\n\
         Try (the X-Node header names the node that answered):\n\
         \x20 a read, spread over every node:\n\
         \x20   curl -si 'http://{proxy}/geoserver/wms?service=WMS&version=1.3.0&request=GetMap&layers=topp:states&bbox=-180,-90,180,90&width=256&height=256&crs=EPSG:4326&format=image/png' -o /dev/null -D - | grep -i x-node\n\
         \x20 a write, always on the master:\n\
         \x20   curl -si -X POST -H 'Content-Type: text/xml' -d '<workspace><name>demo</name></workspace>' http://{proxy}/geoserver/rest/workspaces | grep -i x-node\n\
         \x20 the cluster as geolb sees it:\n\
         \x20   curl -s http://{admin}/status\n\
         \x20 make the master fail; within ~3 s writes move to gs-replica-1 (watch the log and /status):\n\
         \x20   curl -X POST {master}/__sim/fail\n\
         \x20 bring it back (failback is sticky: gs-replica-1 keeps the role until it fails):\n\
         \x20   curl -X POST {master}/__sim/recover\n\
         \x20 other failures: /__sim/hang (never answers), /__sim/exception (200 with an OGC exception).\n\n\
         Publish, then read at once (replication lag hidden):\n\
         \x20 publish demo:roads through geolb (the write goes to the master; geolb pins you there for a few seconds):\n\
         \x20   curl -si -c /tmp/geolb-demo.cookies -X POST -H 'Content-Type: text/xml' -d '<featureType><name>roads</name></featureType>' http://{proxy}/geoserver/rest/workspaces/demo/datastores/demo/featuretypes\n\
         \x20 read it at once: a map, not LayerNotDefined, although the replicas do not know it yet\n\
         \x20 (a replica's \"not known here\" is asked again of the master; with the cookie you read from the master):\n\
         \x20   curl -si -b /tmp/geolb-demo.cookies 'http://{proxy}/geoserver/wms?service=WMS&version=1.3.0&request=GetMap&layers=demo:roads&bbox=-180,-90,180,90&width=256&height=256&crs=EPSG:4326&format=image/png' -o /dev/null -D - | grep -i -e content-type -e x-node\n\
         \x20 the replicas learn demo:roads {lag_text} later; ask one directly to see (LayerNotDefined, then image/png):\n\
         \x20   curl -s '{replica1}/geoserver/wms?service=WMS&version=1.3.0&request=GetMap&layers=demo:roads' | head -c 300; echo\n\
         \x20 make a node sick (every answer an OutOfMemoryError exception): its exceptions never reach clients;\n\
         \x20 watch /status eject it with the reason:\n\
         \x20   curl -X POST {replica2}/__sim/exception\n\
         \x20   curl -s http://{admin}/status\n\
         \x20   curl -X POST {replica2}/__sim/recover\n\
         \x20 a rolling catalog reload, one node at a time (each busy for a moment), master candidates last:\n\
         \x20   curl -X POST -H 'Authorization: Bearer demo' http://{admin}/cluster/reload\n\
         \x20   curl -s http://{admin}/cluster/reload\n\
         Ctrl-C stops.",
        nodes[0].url(),
        nodes[1].url(),
        nodes[2].url(),
        replica1 = nodes[1].url(),
        replica2 = nodes[2].url(),
    );
    signals.stop().await;
    println!("stopping");
    running.shutdown().await;
    ExitCode::SUCCESS
}
