//! Environment overrides, so a compose file can configure geolb inline (the way dockercloud/haproxy
//! users are used to): they are applied to the file's TOML before validation.
//!
//! | variable | replaces | example |
//! | --- | --- | --- |
//! | `GEOLB_CONFIG` | the config path (`--config`) | `/etc/geolb/config.toml` |
//! | `GEOLB_LISTEN` | `listen.http` (comma-separated) | `0.0.0.0:80` |
//! | `GEOLB_ADMIN` | `admin.listen` | `0.0.0.0:9090` |
//! | `GEOLB_ADMIN_TOKEN` | `admin.token` | `s3cret` |
//! | `GEOLB_CONTEXT_PATH` | `routing.context_path` | `/geoserver` |
//! | `GEOLB_NODES` | every `[[nodes]]` | `gs-master=http://master:8080;master=1,geoserver=http://geoserver:8080` |
//!
//! A `GEOLB_NODES` entry is `name=url`, then `;key=value` options: `master=N`, `reads=false`,
//! `discover=dns`, `resolve_interval=5s`. With
//! `GEOLB_NODES` set, the config file may be missing: the defaults apply.

use toml::{Table, Value};

use super::ConfigError;

/// The variables geolb reads.
pub const VARIABLES: &[&str] = &[
    "GEOLB_LISTEN",
    "GEOLB_ADMIN",
    "GEOLB_ADMIN_TOKEN",
    "GEOLB_CONTEXT_PATH",
    "GEOLB_NODES",
];

/// Whether any override is set.
pub fn any(env: &impl Fn(&str) -> Option<String>) -> bool {
    VARIABLES.iter().any(|v| env(v).is_some())
}

/// Applies the overrides to the config text; returns the new text (unchanged when none is set).
pub fn apply(text: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    if !any(env) {
        return Ok(text.to_string());
    }
    let mut table: Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
        file: None,
        key: None,
        line: None,
        message: format!(
            "cannot apply GEOLB_* overrides to a config that does not parse: {}",
            e.message()
        ),
    })?;
    let bad = |var: &str, message: String| ConfigError {
        file: None,
        key: Some(var.to_string()),
        line: None,
        message,
    };
    if let Some(listen) = env("GEOLB_LISTEN") {
        let addrs: Vec<Value> = listen
            .split(',')
            .map(|a| Value::String(a.trim().to_string()))
            .collect();
        section(&mut table, "listen").insert("http".into(), Value::Array(addrs));
    }
    if let Some(admin) = env("GEOLB_ADMIN") {
        section(&mut table, "admin")
            .insert("listen".into(), Value::String(admin.trim().to_string()));
    }
    if let Some(token) = env("GEOLB_ADMIN_TOKEN") {
        section(&mut table, "admin").insert("token".into(), Value::String(token));
    }
    if let Some(cp) = env("GEOLB_CONTEXT_PATH") {
        section(&mut table, "routing").insert("context_path".into(), Value::String(cp));
    }
    if let Some(nodes) = env("GEOLB_NODES") {
        let mut list = Vec::new();
        for (i, entry) in nodes
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            list.push(Value::Table(node(entry).map_err(|m| {
                bad("GEOLB_NODES", format!("entry {} `{entry}`: {m}", i + 1))
            })?));
        }
        table.insert("nodes".into(), Value::Array(list));
    }
    Ok(toml::to_string(&table).unwrap_or_default())
}

fn section<'t>(table: &'t mut Table, name: &str) -> &'t mut Table {
    let entry = table
        .entry(name.to_string())
        .or_insert_with(|| Value::Table(Table::new()));
    if !entry.is_table() {
        *entry = Value::Table(Table::new());
    }
    match entry {
        Value::Table(t) => t,
        _ => unreachable!("made a table just above"),
    }
}

/// `name=url;master=1;reads=false`.
fn node(entry: &str) -> Result<Table, String> {
    let mut parts = entry.split(';');
    let head = parts.next().unwrap_or_default();
    let (name, url) = head.split_once('=').ok_or("expected name=url")?;
    let mut t = Table::new();
    t.insert("name".into(), Value::String(name.trim().to_string()));
    t.insert("url".into(), Value::String(url.trim().to_string()));
    for option in parts {
        let (key, value) = option
            .split_once('=')
            .ok_or_else(|| format!("option `{option}`: expected key=value"))?;
        let value = value.trim();
        let parsed = match key.trim() {
            "master" => Value::Integer(
                value
                    .parse::<i64>()
                    .map_err(|_| format!("master `{value}`: expected a number"))?,
            ),
            "reads" => Value::Boolean(
                value
                    .parse::<bool>()
                    .map_err(|_| format!("reads `{value}`: expected true or false"))?,
            ),
            "discover" | "resolve_interval" => Value::String(value.to_string()),
            other => {
                return Err(format!(
                    "unknown option `{other}` (master, reads, discover, resolve_interval)"
                ))
            }
        };
        t.insert(key.trim().to_string(), parsed);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn env<'v>(vars: &'v [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> + 'v {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn nothing_set_changes_nothing() {
        assert_eq!(
            apply("[listen]\nhttp = [\"1.2.3.4:5\"]\n", &env(&[])).unwrap(),
            "[listen]\nhttp = [\"1.2.3.4:5\"]\n"
        );
    }

    #[test]
    fn a_whole_config_from_the_environment() {
        let vars = [
            ("GEOLB_LISTEN", "0.0.0.0:80, 127.0.0.1:8081"),
            ("GEOLB_ADMIN", "0.0.0.0:9090"),
            ("GEOLB_ADMIN_TOKEN", "s3cret"),
            ("GEOLB_NODES", "gs-master=http://geoserver-master:8080;master=1, geoserver=http://geoserver:8080;reads=true;discover=dns;resolve_interval=2s"),
        ];
        let text = apply("", &env(&vars)).unwrap();
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.listen.http.len(), 2);
        assert_eq!(c.admin.listen.to_string(), "0.0.0.0:9090");
        assert_eq!(c.admin.token.as_deref(), Some("s3cret"));
        assert_eq!(c.nodes.len(), 1);
        assert_eq!(
            (c.nodes[0].name.as_str(), c.nodes[0].master),
            ("gs-master", Some(1))
        );
        assert_eq!(
            (c.discover[0].host.as_str(), c.discover[0].port),
            ("geoserver", 8080)
        );
        assert_eq!(c.discover[0].interval.as_secs(), 2);
    }

    #[test]
    fn overrides_replace_the_file_values() {
        let file = "[listen]\nhttp = [\"127.0.0.1:1\"]\n[health]\ninterval = \"5s\"\n[[nodes]]\nname = \"a\"\nurl = \"http://a:1\"\n";
        let text = apply(
            file,
            &env(&[
                ("GEOLB_LISTEN", "127.0.0.1:2"),
                ("GEOLB_NODES", "b=http://b:2;master=1"),
            ]),
        )
        .unwrap();
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.listen.http[0].port(), 2);
        assert_eq!(
            c.health.interval.0.as_secs(),
            5,
            "the rest of the file stays"
        );
        assert_eq!(c.nodes.len(), 1);
        assert_eq!(c.nodes[0].name, "b");
    }

    #[test]
    fn mistakes_name_the_variable_and_entry() {
        let e = apply("", &env(&[("GEOLB_NODES", "a=http://a:1,oops")])).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("GEOLB_NODES"));
        assert!(
            e.message.contains("entry 2 `oops`: expected name=url"),
            "{e}"
        );
        let e = apply("", &env(&[("GEOLB_NODES", "a=http://a:1;master=first")])).unwrap_err();
        assert!(e.message.contains("master `first`"), "{e}");
        let e = apply("", &env(&[("GEOLB_NODES", "a=http://a:1;colour=red")])).unwrap_err();
        assert!(e.message.contains("unknown option `colour`"), "{e}");
        // What the environment says is validated like a file: a bad address names its key.
        let text = apply(
            "",
            &env(&[("GEOLB_LISTEN", "nowhere"), ("GEOLB_NODES", "a=http://a:1")]),
        )
        .unwrap();
        assert_eq!(
            Config::parse(&text).unwrap_err().key.as_deref(),
            Some("listen.http[0]")
        );
    }
}
