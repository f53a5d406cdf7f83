//! R5 check 1, the inputs: valid base configs and the mutations that turn them into fuzzed ones.

use rand::rngs::StdRng;
use rand::Rng;

use super::{random_string, ALNUM};

pub(super) const PEM: &str =
    "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n";

/// Secret values used in the valid base configs: no error message may contain them.
pub(super) const BASE_SECRETS: [&str; 5] = [
    "ghp_SECRET_TOKEN_VALUE",
    "API_SECRET_VALUE",
    "HOOK_SECRET_VALUE",
    "POLICY_SECRET_VALUE",
    "PROXYPASS",
];

/// The secret environment variables: the loader falls back to them, so they must be unset.
pub(super) const SECRET_ENV: [&str; 5] = [
    "RUNNER_MANAGER_GITHUB_TOKEN",
    "RUNNER_MANAGER_SERVICE_TOKEN",
    "RUNNER_MANAGER_API_TOKEN",
    "RUNNER_MANAGER_WEBHOOK_SECRET",
    "RUNNER_MANAGER_CONFIG",
];

/// The valid configs mutations start from: deploy/config.example.toml and the valid configs of
/// crates/cli/tests/config.rs (files are relative to the fixture directory).
pub(super) fn base_configs() -> Vec<(&'static str, String)> {
    const MINIMAL: &str = "[github]\npath = \"owner/repo\"\ntoken = \"ghp_SECRET_TOKEN_VALUE\"\n";
    vec![
        (
            "example",
            include_str!("../../../../deploy/config.example.toml").to_owned(),
        ),
        ("minimal", MINIMAL.to_owned()),
        (
            "org",
            "[github]\npath = \"octo-org\"\nrunner_group = \"gpu\"\ntoken = \"ghp_SECRET_TOKEN_VALUE\"\n"
                .to_owned(),
        ),
        (
            "token-file",
            "[github]\npath = \"o/r\"\ntoken_file = \"github-token\"\n".to_owned(),
        ),
        (
            "app",
            "[github]\npath = \"octo-org\"\n[github.app]\napp_id = 12\ninstallation_id = 34\nprivate_key_file = \"app.pem\"\n"
                .to_owned(),
        ),
        (
            "lxd-https",
            format!("{MINIMAL}[lxd]\nurl = \"https://lxd.test:8443\"\nclient_cert = \"lxd.crt\"\nclient_key = \"lxd.key\"\nserver_cert = \"lxd.crt\"\n"),
        ),
        (
            "ghes",
            "[github]\npath = \"enterprises/acme\"\ntoken = \"ghp_SECRET_TOKEN_VALUE\"\napi_url = \"https://ghe.example.com/api/v3\"\n"
                .to_owned(),
        ),
        (
            "proxy",
            format!("{MINIMAL}[proxy]\nhttp = \"http://user:PROXYPASS@proxy:3128\"\nhttps = \"http://proxy:3128\"\nno_proxy = \"localhost, 10.0.0.0/8\"\n"),
        ),
        (
            "secrets",
            format!("{MINIMAL}[server]\nlisten = \"0.0.0.0:9464\"\napi_token = \"API_SECRET_VALUE\"\nwebhook_secret = \"HOOK_SECRET_VALUE\"\nreconcile_interval_seconds = 60\n[policy]\nurl = \"http://policy:8080\"\nservice_token = \"POLICY_SECRET_VALUE\"\n[metrics]\nissue_metrics = true\nevents_log = \"events.log\"\n"),
        ),
        (
            "container-jit",
            format!("app_name = \"my-app\"\nunit = 3\nstate_dir = \"state\"\n{MINIMAL}[lxd]\nimage = \"busybox\"\ninstance_type = \"container\"\nstorage_path = \"/storage/ram\"\ntarget = \"member1\"\n[runners]\nquantity = 10000\ncpu = 1024\nmemory = \"256MiB\"\ndisk = \"1GiB\"\nlabels = [\"gpu\", \"x64\"]\nregistration = \"jit\"\n"),
        ),
        (
            "file-secrets",
            "[github]\npath = \"o/r\"\ntoken_file = \"github-token\"\n[server]\napi_token_file = \"secret\"\nwebhook_secret_file = \"secret\"\n[policy]\nurl = \"https://policy.example.com\"\nservice_token_file = \"secret\"\n"
                .to_owned(),
        ),
    ]
}

/// The schema's top-level tables.
const TOP_TABLES: [&str; 7] = [
    "github", "lxd", "runners", "proxy", "policy", "metrics", "server",
];

/// Whether `name` is a known top-level name: a table or a top-level key (as
/// `top_level_names()` in crates/cli/tests/config.rs).
pub(super) fn is_top_level(name: &str) -> bool {
    ["app_name", "unit", "state_dir"].contains(&name) || TOP_TABLES.contains(&name)
}

/// Every key of the schema, with values of the right type that are not allowed.
pub(super) fn bad_values() -> Vec<(&'static str, Vec<String>)> {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let many_labels = format!(
        "[{}]",
        (0..101)
            .map(|i| format!("\"l{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let long_name = format!("\"{}\"", "a".repeat(41));
    vec![
        (
            "app_name",
            vec![
                "\"\"".into(),
                "\"Bad Name\"".into(),
                long_name,
                "\"UPPER\"".into(),
                "\"-lead\"".into(),
                "\"ünï\"".into(),
            ],
        ),
        (
            "unit",
            s(&[
                "-1",
                "100000",
                "9223372036854775807",
                "-9223372036854775808",
            ]),
        ),
        ("state_dir", s(&["\"\""])),
        (
            "github.path",
            s(&[
                "\"\"",
                "\"a/b/c\"",
                "\"owner/\"",
                "\"/repo\"",
                "\"own er/repo\"",
                "\"owner/..\"",
                "\"-owner\"",
                "\"enterprises/\"",
            ]),
        ),
        ("github.runner_group", s(&["\"\"", "\" \""])),
        ("github.token", s(&["\"\"", "\"   \""])),
        (
            "github.token_file",
            s(&["\"/missing\"", "\"empty\"", "\"\""]),
        ),
        (
            "github.api_url",
            s(&["\"ftp://x\"", "\"not a url\"", "\"\"", "\"http://\""]),
        ),
        ("github.web_url", s(&["\"not a url\"", "\"ftp://x\""])),
        ("github.app.app_id", s(&["0", "-1"])),
        ("github.app.installation_id", s(&["0", "-5"])),
        (
            "github.app.private_key_file",
            s(&["\"/missing.pem\"", "\"secret\"", "\"\""]),
        ),
        ("lxd.socket", s(&["\"\""])),
        ("lxd.url", s(&["\"http://lxd.test:8443\"", "\"not a url\""])),
        ("lxd.client_cert", s(&["\"/missing.crt\"", "\"\""])),
        ("lxd.client_key", s(&["\"/missing.key\""])),
        ("lxd.server_cert", s(&["\"/missing.crt\""])),
        ("lxd.image", s(&["\"two words\"", "\"\""])),
        ("lxd.instance_type", s(&["\"vm\"", "\"\"", "\"Container\""])),
        ("lxd.storage_path", s(&["\"\""])),
        ("lxd.target", s(&["\"\""])),
        ("runners.quantity", s(&["-1", "10001", "4294967296"])),
        ("runners.cpu", s(&["0", "1025", "-3"])),
        (
            "runners.memory",
            s(&[
                "\"7XB\"",
                "\"0GiB\"",
                "\"-1GiB\"",
                "\"\"",
                "\"1.5GiB\"",
                "\"99999999999TiB\"",
            ]),
        ),
        ("runners.disk", s(&["\"0GiB\"", "\"10 GiB\"", "\"GiB\""])),
        (
            "runners.labels",
            vec![
                "[\"has space\"]".into(),
                "[\"a,b\"]".into(),
                "[\"\"]".into(),
                many_labels,
            ],
        ),
        ("runners.registration", s(&["\"oauth\"", "\"JIT\"", "\"\""])),
        (
            "proxy.http",
            s(&["\"socks5://proxy:1080\"", "\"not a url\""]),
        ),
        ("proxy.https", s(&["\"not a url\"", "\"ftp://p\""])),
        ("proxy.no_proxy", s(&["\"a\\tb\""])),
        ("policy.url", s(&["\"ftp://policy\"", "\"not a url\""])),
        ("policy.service_token", s(&["\"orphan-token\""])),
        (
            "policy.service_token_file",
            s(&["\"/missing\"", "\"empty\""]),
        ),
        ("metrics.events_log", s(&["\"\""])),
        (
            "server.listen",
            s(&[
                "\"localhost:9464\"",
                "\"\"",
                "\"1.2.3.4\"",
                "\"1.2.3.4:99999\"",
            ]),
        ),
        ("server.api_token", s(&["\"\""])),
        ("server.api_token_file", s(&["\"empty\"", "\"/missing\""])),
        ("server.webhook_secret", s(&["\"\""])),
        (
            "server.webhook_secret_file",
            s(&["\"/missing\"", "\"empty\""]),
        ),
        (
            "server.reconcile_interval_seconds",
            s(&["0", "9", "86401", "-10"]),
        ),
    ]
}

/// A TOML value from its text (`v = <text>`).
fn toml_value(text: &str) -> Option<toml::Value> {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()?
        .remove("v")
}

/// Paths of every key (leaves and tables) in `table`.
pub(super) fn key_paths(table: &toml::Table, prefix: &str, out: &mut Vec<(String, bool)>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => {
                out.push((path.clone(), true));
                key_paths(inner, &path, out);
            }
            _ => out.push((path, false)),
        }
    }
}

/// The table at `path` (created on the way when `create`); `None` if a scalar is in the way.
fn table_at<'a>(
    table: &'a mut toml::Table,
    path: &[&str],
    create: bool,
) -> Option<&'a mut toml::Table> {
    let mut current = table;
    for part in path {
        if !current.contains_key(*part) {
            if !create {
                return None;
            }
            current.insert((*part).to_owned(), toml::Value::Table(toml::Table::new()));
        }
        current = current.get_mut(*part)?.as_table_mut()?;
    }
    Some(current)
}

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = parts.split_last() else {
        return false;
    };
    match table_at(table, parents, true) {
        Some(parent) => {
            parent.insert((*last).to_owned(), value);
            true
        }
        None => false,
    }
}

fn remove_path(table: &mut toml::Table, path: &str) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = parts.split_last() else {
        return false;
    };
    table_at(table, parents, false).is_some_and(|parent| parent.remove(*last).is_some())
}

/// A value of a type different from `current`'s.
fn wrong_type_value(rng: &mut StdRng, current: Option<&toml::Value>) -> toml::Value {
    loop {
        let value = match rng.random_range(0..8) {
            0 => toml::Value::Integer(rng.random_range(-5_000_000..5_000_000)),
            1 => toml::Value::Float(rng.random_range(-1e6..1e6)),
            2 => toml::Value::Boolean(rng.random()),
            3 => toml::Value::String({
                let n = rng.random_range(0..12);
                random_string(rng, ALNUM, n)
            }),
            4 => toml::Value::Array(vec![
                toml::Value::Integer(1),
                toml::Value::String("x".into()),
            ]),
            5 => {
                let mut t = toml::Table::new();
                t.insert("a".into(), toml::Value::Integer(1));
                toml::Value::Table(t)
            }
            6 => match "1979-05-27T07:32:00Z".parse() {
                Ok(dt) => toml::Value::Datetime(dt),
                Err(_) => toml::Value::Integer(7),
            },
            _ => toml::Value::Array(Vec::new()),
        };
        let same = current.is_some_and(|c| c.type_str() == value.type_str());
        if !same {
            return value;
        }
    }
}

/// The kinds of generated input (the evidence column counts them).
pub(super) const KINDS: [&str; 10] = [
    "valid base",
    "wrong type",
    "out of range",
    "unknown key",
    "missing key",
    "mixed",
    "truncated",
    "text edits",
    "random bytes",
    "random text",
];

/// One structured mutation of `table`; false if it could not apply.
fn mutate(
    rng: &mut StdRng,
    table: &mut toml::Table,
    kind: usize,
    bad: &[(&'static str, Vec<String>)],
) -> bool {
    let mut paths = Vec::new();
    key_paths(table, "", &mut paths);
    match kind {
        // wrong type, at an existing key or any schema key
        1 => {
            let path = if !paths.is_empty() && rng.random_bool(0.5) {
                paths[rng.random_range(0..paths.len())].0.clone()
            } else {
                bad[rng.random_range(0..bad.len())].0.to_owned()
            };
            let current = {
                let parts: Vec<&str> = path.split('.').collect();
                let (last, parents) = match parts.split_last() {
                    Some(split) => split,
                    None => return false,
                };
                table_at(table, parents, false).and_then(|t| t.get(*last).cloned())
            };
            let value = wrong_type_value(rng, current.as_ref());
            set_path(table, &path, value)
        }
        // a right-typed value out of range / not allowed
        2 => {
            let (key, values) = &bad[rng.random_range(0..bad.len())];
            let Some(value) = toml_value(&values[rng.random_range(0..values.len())]) else {
                return false;
            };
            set_path(table, key, value)
        }
        // an unknown key at a random level
        3 => {
            // The root, every table (`github.app` after `github`), then the input's tables.
            let mut tables: Vec<String> = vec![String::new()];
            for table in TOP_TABLES {
                tables.push(table.to_owned());
                if table == "github" {
                    tables.push("github.app".to_owned());
                }
            }
            tables.extend(paths.iter().filter(|(_, t)| *t).map(|(p, _)| p.clone()));
            let at = tables[rng.random_range(0..tables.len())].clone();
            let name = match rng.random_range(0..8) {
                0 => "colour".to_owned(),
                1 => "Path".to_owned(),
                2 => "tokn".to_owned(),
                3 => "quantity2".to_owned(),
                4 => "é-ü".to_owned(),
                5 => "a.b".to_owned(),
                6 => String::new(),
                _ => {
                    let n = rng.random_range(1..30);
                    random_string(rng, ALNUM, n)
                }
            };
            let value = wrong_type_value(rng, None);
            let parts: Vec<&str> = if at.is_empty() {
                Vec::new()
            } else {
                at.split('.').collect()
            };
            match table_at(table, &parts, true) {
                Some(parent) => {
                    parent.insert(name, value);
                    true
                }
                None => false,
            }
        }
        // a missing key: a required one or any
        4 => {
            let path = match rng.random_range(0..4) {
                0 => "github.path".to_owned(),
                1 => "github.token".to_owned(),
                2 => "github".to_owned(),
                _ if !paths.is_empty() => paths[rng.random_range(0..paths.len())].0.clone(),
                _ => "github.path".to_owned(),
            };
            remove_path(table, &path)
        }
        _ => false,
    }
}

/// Text edits on serialized TOML.
fn text_edit(rng: &mut StdRng, text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let chars: Vec<char> = text.chars().collect();
    match rng.random_range(0..6) {
        0 if !lines.is_empty() => {
            let i = rng.random_range(0..lines.len());
            let mut out: Vec<&str> = lines.clone();
            out.remove(i);
            out.join("\n")
        }
        1 if !lines.is_empty() => {
            let i = rng.random_range(0..lines.len());
            let mut out: Vec<&str> = lines.clone();
            out.insert(i, lines[i]);
            out.join("\n")
        }
        2 if lines.len() > 1 => {
            let (i, j) = (
                rng.random_range(0..lines.len()),
                rng.random_range(0..lines.len()),
            );
            let mut out: Vec<&str> = lines.clone();
            out.swap(i, j);
            out.join("\n")
        }
        3 => {
            const SIGNIFICANT: [char; 16] = [
                '[', ']', '"', '=', '\n', '{', '}', ',', '.', '#', '\'', '\\', ' ', '\t', 'é',
                '\u{0}',
            ];
            let mut out = chars.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..=out.len());
                out.insert(at, SIGNIFICANT[rng.random_range(0..SIGNIFICANT.len())]);
            }
            out.into_iter().collect()
        }
        4 if !chars.is_empty() => {
            let start = rng.random_range(0..chars.len());
            let end = (start + rng.random_range(1..10)).min(chars.len());
            chars[..start].iter().chain(&chars[end..]).collect()
        }
        _ if !chars.is_empty() => {
            let mut out = chars.clone();
            let at = rng.random_range(0..out.len());
            out[at] = char::from(rng.random_range(0x20u8..0x7f));
            out.into_iter().collect()
        }
        _ => text.to_owned(),
    }
}

/// One generated input: its kind and bytes.
pub(super) fn generate(
    rng: &mut StdRng,
    bases: &[(&'static str, String)],
    bad: &[(&'static str, Vec<String>)],
) -> (usize, Vec<u8>) {
    let (_, base_text) = &bases[rng.random_range(0..bases.len())];
    let roll = rng.random_range(0..100);
    let kind = match roll {
        0..4 => 0,
        4..16 => 1,
        16..28 => 2,
        28..40 => 3,
        40..50 => 4,
        50..62 => 5,
        62..72 => 6,
        72..84 => 7,
        84..92 => 8,
        _ => 9,
    };
    let structured = |rng: &mut StdRng, kinds: &[usize]| -> String {
        let Ok(mut table) = toml::from_str::<toml::Table>(base_text) else {
            return base_text.clone();
        };
        for kind in kinds {
            // A mutation that cannot apply (a scalar in the way) is retried a few times.
            for _ in 0..4 {
                if mutate(rng, &mut table, *kind, bad) {
                    break;
                }
            }
        }
        toml::to_string(&table).unwrap_or_else(|_| base_text.clone())
    };
    let bytes = match kind {
        0 => base_text.clone().into_bytes(),
        1..=4 => structured(rng, &[kind]).into_bytes(),
        5 => {
            let n = rng.random_range(2..6);
            let kinds: Vec<usize> = (0..n).map(|_| rng.random_range(1..5)).collect();
            structured(rng, &kinds).into_bytes()
        }
        6 => {
            let text = if rng.random_bool(0.5) {
                base_text.clone()
            } else {
                {
                    let k = rng.random_range(1..5);
                    structured(rng, &[k])
                }
            };
            let cut = rng.random_range(0..=text.len());
            let mut cut = cut;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.as_bytes()[..cut].to_vec()
        }
        7 => {
            let mut text = base_text.clone();
            for _ in 0..rng.random_range(1..4) {
                text = text_edit(rng, &text);
            }
            text.into_bytes()
        }
        8 => {
            let len = rng.random_range(0..600);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // Half of them: a valid config with random bytes spliced in.
            if rng.random_bool(0.5) {
                let mut text = base_text.clone().into_bytes();
                let at = rng.random_range(0..=text.len());
                bytes.truncate(rng.random_range(1..8));
                text.splice(at..at, bytes);
                bytes = text;
            }
            bytes
        }
        _ => {
            const TOKENS: [&str; 24] = [
                "[github]",
                "[[runners]]",
                "[lxd]",
                "path",
                "token",
                "=",
                "\"x\"",
                "1",
                "true",
                "\n",
                "{",
                "}",
                "[",
                "]",
                ",",
                "#",
                "\"\"\"",
                "'''",
                "quantity",
                "1979-05-27",
                "inf",
                "nan",
                "0x1F",
                "[server]",
            ];
            if rng.random_bool(0.5) {
                let n = rng.random_range(0..60);
                (0..n)
                    .map(|_| TOKENS[rng.random_range(0..TOKENS.len())])
                    .collect::<Vec<_>>()
                    .join(" ")
                    .into_bytes()
            } else {
                let len = rng.random_range(0..300);
                random_string(rng, b" \n\t=[]{}\",.#abcxyz0123456789_-'\\", len).into_bytes()
            }
        }
    };
    (kind, bytes)
}
