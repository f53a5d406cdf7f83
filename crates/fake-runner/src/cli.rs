//! The command line of `Runner.Listener`, as actions/runner's `CommandSettings` parses it.
//!
//! Every argument can also come from `ACTIONS_RUNNER_INPUT_<NAME>` (the command line wins). Two
//! extensions keep secrets out of `ps`: `--token-file PATH` and `--jitconfig-file PATH`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;

const INPUT_PREFIX: &str = "ACTIONS_RUNNER_INPUT_";

/// What the listener was asked to do.
#[derive(Debug)]
pub enum Command {
    Configure(ConfigureArgs),
    Remove(RemoveArgs),
    Run(RunArgs),
    Help(HelpTopic),
    Version,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelpTopic {
    Configure,
    Remove,
    Run,
}

/// Where a secret comes from; a file is read (and maybe deleted) only when the command runs.
#[derive(Debug)]
pub enum SecretSource {
    Value(SecretString),
    File(PathBuf),
}

#[derive(Debug)]
pub struct ConfigureArgs {
    pub url: String,
    pub token: SecretSource,
    /// `None`: the host name.
    pub name: Option<String>,
    pub labels: Vec<String>,
    pub runner_group: Option<String>,
    pub work: String,
    pub ephemeral: bool,
    pub replace: bool,
    pub disable_update: bool,
    pub no_default_labels: bool,
}
// `--unattended` is accepted and implied: the fake runner never prompts.

#[derive(Debug)]
pub struct RemoveArgs {
    /// `None` with `--local`: only the local files are deleted.
    pub token: Option<SecretSource>,
}

#[derive(Debug, Default)]
pub struct RunArgs {
    pub jit_config: Option<SecretSource>,
    /// Deprecated `--once`: exit after one job, keep the registration.
    pub once: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum CliError {
    Unrecognized(Vec<String>),
    MissingValue(String),
    /// A required setting has no value (the real runner would prompt without `--unattended`).
    Missing(&'static str),
    Invalid(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Unrecognized(args) => {
                let list: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
                write!(
                    f,
                    "Unrecognized command-line input arguments: {}. For usage refer to: ./config.sh --help",
                    list.join(", ")
                )
            }
            CliError::MissingValue(arg) => {
                write!(f, "Missing value for command-line argument '--{arg}'")
            }
            CliError::Missing(name) => write!(
                f,
                "Invalid configuration provided for {name}. Terminating unattended configuration."
            ),
            CliError::Invalid(msg) => f.write_str(msg),
        }
    }
}

/// Values from `ACTIONS_RUNNER_INPUT_<NAME>`, keyed by upper-case name with `-` as `_`.
#[derive(Debug, Default)]
pub struct EnvInputs(BTreeMap<String, String>);

impl EnvInputs {
    pub fn from_env<'a>(vars: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        let mut map = BTreeMap::new();
        for (key, value) in vars {
            let upper = key.to_ascii_uppercase();
            if let Some(name) = upper.strip_prefix(INPUT_PREFIX) {
                let value = value.trim();
                if !name.is_empty() && !value.is_empty() {
                    map.insert(name.replace('-', "_"), value.to_string());
                }
            }
        }
        Self(map)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(&name.to_ascii_uppercase().replace('-', "_"))
            .map(String::as_str)
    }

    fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"))
    }
}

/// `--name value` arguments and `--flag`s of one command line.
struct Parsed<'a> {
    values: BTreeMap<String, String>,
    flags: Vec<String>,
    env: &'a EnvInputs,
}

impl Parsed<'_> {
    fn value(&self, name: &str) -> Option<String> {
        self.values
            .get(name)
            .cloned()
            .or_else(|| self.env.get(name).map(str::to_string))
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name) || self.env.flag(name)
    }

    /// `--version` (on the command line only), else `--help` on `topic`, when asked for.
    fn version_or_help(&self, topic: HelpTopic) -> Option<Command> {
        if self.flags.iter().any(|f| f == "version") {
            Some(Command::Version)
        } else if self.flag("help") {
            Some(Command::Help(topic))
        } else {
            None
        }
    }

    fn secret(&self, name: &str, file_arg: &str) -> Option<SecretSource> {
        if let Some(v) = self.values.get(name) {
            return Some(SecretSource::Value(SecretString::from(v.clone())));
        }
        if let Some(path) = self.value(file_arg) {
            return Some(SecretSource::File(PathBuf::from(path)));
        }
        self.env
            .get(name)
            .map(|v| SecretSource::Value(SecretString::from(v)))
    }
}

fn parse_args<'a>(
    args: &[String],
    value_args: &[&str],
    flag_args: &[&str],
    env: &'a EnvInputs,
) -> Result<Parsed<'a>, CliError> {
    let mut parsed = Parsed {
        values: BTreeMap::new(),
        flags: Vec::new(),
        env,
    };
    let mut unknown = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let Some(name) = arg.strip_prefix("--") else {
            unknown.push(arg.clone());
            continue;
        };
        let name = name.to_ascii_lowercase();
        if value_args.contains(&name.as_str()) {
            match iter.next() {
                Some(value) => {
                    parsed.values.insert(name, value.clone());
                }
                None => return Err(CliError::MissingValue(name)),
            }
        } else if flag_args.contains(&name.as_str()) {
            parsed.flags.push(name);
        } else {
            unknown.push(arg.clone());
        }
    }
    if unknown.is_empty() {
        Ok(parsed)
    } else {
        Err(CliError::Unrecognized(unknown))
    }
}

/// Splits `a, b,,c` into labels, dropping empty and case-insensitively repeated ones.
pub fn split_labels(raw: &str) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for label in raw.split(',').map(str::trim).filter(|l| !l.is_empty()) {
        if !labels.iter().any(|l| l.eq_ignore_ascii_case(label)) {
            labels.push(label.to_string());
        }
    }
    labels
}

/// Parses the listener's arguments (without the program name).
pub fn parse(args: &[String], env: &EnvInputs) -> Result<Command, CliError> {
    let (command, rest) = match args.split_first() {
        None => return Ok(Command::Run(RunArgs::default())),
        Some((first, rest)) => (first.to_ascii_lowercase(), rest),
    };
    match command.as_str() {
        "configure" => parse_configure(rest, env),
        "remove" => parse_remove(rest, env),
        "run" => parse_run(rest, env),
        "--version" if rest.is_empty() => Ok(Command::Version),
        "--help" | "-h" if rest.is_empty() => Ok(Command::Help(HelpTopic::Configure)),
        // `Runner.Listener --jitconfig X` runs, as the real listener does.
        _ if command.starts_with("--") => parse_run(args, env),
        _ => Err(CliError::Unrecognized(vec![args[0].clone()])),
    }
}

fn parse_configure(args: &[String], env: &EnvInputs) -> Result<Command, CliError> {
    let p = parse_args(
        args,
        &[
            "url",
            "token",
            "token-file",
            "name",
            "labels",
            "runnergroup",
            "work",
        ],
        &[
            "ephemeral",
            "unattended",
            "replace",
            "disableupdate",
            "no-default-labels",
            "help",
            "version",
        ],
        env,
    )?;
    if let Some(command) = p.version_or_help(HelpTopic::Configure) {
        return Ok(command);
    }
    let url = p.value("url").ok_or(CliError::Missing("url"))?;
    let token = p
        .secret("token", "token-file")
        .ok_or(CliError::Missing("token"))?;
    let labels = p
        .value("labels")
        .map(|l| split_labels(&l))
        .unwrap_or_default();
    let no_default_labels = p.flag("no-default-labels");
    if no_default_labels && labels.is_empty() {
        return Err(CliError::Invalid(
            "--no-default-labels requires at least one label in --labels".to_string(),
        ));
    }
    let name = p.value("name").map(|n| n.trim().to_string());
    if name.as_deref().is_some_and(str::is_empty) {
        return Err(CliError::Missing("name"));
    }
    Ok(Command::Configure(ConfigureArgs {
        url,
        token,
        name,
        labels,
        runner_group: p.value("runnergroup").filter(|g| !g.trim().is_empty()),
        work: p.value("work").unwrap_or_else(|| "_work".to_string()),
        ephemeral: p.flag("ephemeral"),
        replace: p.flag("replace"),
        disable_update: p.flag("disableupdate"),
        no_default_labels,
    }))
}

fn parse_remove(args: &[String], env: &EnvInputs) -> Result<Command, CliError> {
    let p = parse_args(
        args,
        &["token", "token-file"],
        &["unattended", "local", "help"],
        env,
    )?;
    if p.flag("help") {
        return Ok(Command::Help(HelpTopic::Remove));
    }
    if p.flag("local") {
        return Ok(Command::Remove(RemoveArgs { token: None }));
    }
    let token = p
        .secret("token", "token-file")
        .ok_or(CliError::Missing("token"))?;
    Ok(Command::Remove(RemoveArgs { token: Some(token) }))
}

fn parse_run(args: &[String], env: &EnvInputs) -> Result<Command, CliError> {
    let p = parse_args(
        args,
        &["jitconfig", "jitconfig-file", "startuptype"],
        &["once", "help", "version"],
        env,
    )?;
    if let Some(command) = p.version_or_help(HelpTopic::Run) {
        return Ok(command);
    }
    Ok(Command::Run(RunArgs {
        jit_config: p.secret("jitconfig", "jitconfig-file"),
        once: p.flag("once"),
    }))
}

/// The usage text for `--help`.
pub fn usage(topic: HelpTopic) -> &'static str {
    match topic {
        HelpTopic::Configure | HelpTopic::Remove => CONFIG_USAGE,
        HelpTopic::Run => RUN_USAGE,
    }
}

const CONFIG_USAGE: &str = "\
Commands:
 ./config.sh         Configures the runner
 ./config.sh remove  Unconfigures the runner
 ./run.sh            Runs the runner interactively. Does not require any options.

Config Options:
 --unattended           Disable interactive prompts for missing arguments. Defaults will be used for missing options
 --url string           Repository to add the runner to. Required if unattended
 --token string         Registration token. Required if unattended
 --token-file path      (simulator extension) Read the registration token from a file, keeping it out of `ps`
 --name string          Name of the runner to configure (default: the host name)
 --runnergroup string   Name of the runner group to add this runner to (defaults to the default runner group)
 --labels string        Custom labels that will be added to the runner. This option is mandatory if --no-default-labels is used.
 --no-default-labels    Disables adding the default labels: 'self-hosted,Linux,X64'
 --work string          Relative runner work directory (default _work)
 --replace              Replace any existing runner with the same name (default false)
 --ephemeral            Configure the runner to only take one job and then let the service un-configure the runner after the job finishes (default false)
 --disableupdate        Disable self-hosted runner automatic update to the latest released version

Remove Options:
 --token string         Runner remove token
 --token-file path      (simulator extension) Read the remove token from a file
 --local                Removes the runner config files from your local machine only

Any option can also be given in the environment as ACTIONS_RUNNER_INPUT_<NAME>, for example
ACTIONS_RUNNER_INPUT_TOKEN=<token> (recommended: secrets then never appear on a command line).
";

const RUN_USAGE: &str = "\
Usage: ./run.sh [--jitconfig <encoded_jit_config>] [--once]

 --jitconfig string     Just-in-time configuration (base64 JSON of .runner, .credentials, .credentials_rsaparams).
                        The runner is ephemeral: it takes one job, then exits.
 --jitconfig-file path  (simulator extension) Read the JIT configuration from a file, which is deleted after reading,
                        keeping it out of `ps`. ACTIONS_RUNNER_INPUT_JITCONFIG works too.
 --once                 (deprecated) Exit after one job.

The runner loads KEY=VALUE lines from .env at start, and honours http_proxy, https_proxy and no_proxy.
";

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    /// What a parsed secret says: `value <it>` or `file <path>`.
    fn shown(source: &SecretSource) -> String {
        match source {
            SecretSource::Value(v) => format!("value {}", v.expose_secret()),
            SecretSource::File(p) => format!("file {}", p.display()),
        }
    }

    /// A secret given on the command line never shows in the parsed command's Debug.
    #[test]
    fn debug_and_display_redact() {
        let parsed = parse(&args(&["--jitconfig", "AABBCC"]), &EnvInputs::default());
        let shown = format!("{parsed:?}");
        assert!(!shown.contains("AABBCC"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn env(pairs: &[(&str, &str)]) -> EnvInputs {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EnvInputs::from_env(owned.iter().map(|(k, v)| (k, v)))
    }

    fn configure(list: &[&str], e: &EnvInputs) -> Result<ConfigureArgs, CliError> {
        match parse(&args(list), e)? {
            Command::Configure(c) => Ok(c),
            other => panic!("expected configure, got {other:?}"),
        }
    }

    #[test]
    fn full_configure_line() {
        let c = configure(
            &[
                "configure",
                "--url",
                "http://10.0.0.1:8080/o/r",
                "--token",
                "T",
                "--ephemeral",
                "--unattended",
                "--labels",
                "app, jammy,APP",
                "--name",
                "app-0-1",
                "--runnergroup",
                "g",
                "--disableupdate",
                "--replace",
                "--work",
                "w",
            ],
            &EnvInputs::default(),
        )
        .expect("valid");
        assert_eq!(c.url, "http://10.0.0.1:8080/o/r");
        assert_eq!(shown(&c.token), "value T");
        assert_eq!(c.labels, vec!["app", "jammy"]);
        assert_eq!(c.name.as_deref(), Some("app-0-1"));
        assert_eq!(c.runner_group.as_deref(), Some("g"));
        assert_eq!(c.work, "w");
        assert!(c.ephemeral && c.replace && c.disable_update);
        assert!(!c.no_default_labels);
    }

    #[test]
    fn unknown_arguments_are_listed() {
        let err = configure(
            &["configure", "--url", "u", "--token", "t", "--bogus", "x"],
            &EnvInputs::default(),
        )
        .expect_err("unknown");
        assert_eq!(
            err,
            CliError::Unrecognized(vec!["--bogus".into(), "x".into()])
        );
        assert!(err
            .to_string()
            .starts_with("Unrecognized command-line input arguments: '--bogus', 'x'"));
        assert!(matches!(
            parse(&args(&["frobnicate"]), &EnvInputs::default()),
            Err(CliError::Unrecognized(_))
        ));
        assert!(matches!(
            parse(&args(&["run", "--url", "u"]), &EnvInputs::default()),
            Err(CliError::Unrecognized(_))
        ));
    }

    #[test]
    fn env_inputs_fill_in_and_the_command_line_wins() {
        let e = env(&[
            ("ACTIONS_RUNNER_INPUT_URL", "http://1.2.3.4/o"),
            ("actions_runner_input_token", " secret "),
            ("ACTIONS_RUNNER_INPUT_NAME", "from-env"),
            ("ACTIONS_RUNNER_INPUT_EPHEMERAL", "true"),
            ("ACTIONS_RUNNER_INPUT_NO_DEFAULT_LABELS", "1"),
            ("ACTIONS_RUNNER_INPUT_LABELS", "x"),
        ]);
        let c = configure(&["configure", "--name", "cli"], &e).expect("valid");
        assert_eq!(c.url, "http://1.2.3.4/o");
        assert_eq!(shown(&c.token), "value secret");
        assert_eq!(c.name.as_deref(), Some("cli"));
        assert!(c.ephemeral && c.no_default_labels);
        assert!(!c.replace);
    }

    #[test]
    fn token_file_is_an_alternative_source() {
        let c = configure(
            &["configure", "--url", "u", "--token-file", "/run/t"],
            &EnvInputs::default(),
        )
        .expect("valid");
        assert_eq!(shown(&c.token), "file /run/t");
    }

    #[test]
    fn missing_required_values() {
        let none = EnvInputs::default();
        assert_eq!(
            configure(&["configure", "--token", "t"], &none).expect_err("url"),
            CliError::Missing("url")
        );
        assert_eq!(
            configure(&["configure", "--url", "u"], &none).expect_err("token"),
            CliError::Missing("token")
        );
        assert_eq!(
            configure(&["configure", "--url", "u", "--token"], &none).expect_err("value"),
            CliError::MissingValue("token".into())
        );
        assert!(matches!(
            configure(
                &[
                    "configure",
                    "--url",
                    "u",
                    "--token",
                    "t",
                    "--no-default-labels"
                ],
                &none
            ),
            Err(CliError::Invalid(_))
        ));
    }

    #[test]
    fn remove_and_run_commands() {
        let none = EnvInputs::default();
        match parse(&args(&["remove", "--token", "R"]), &none) {
            Ok(Command::Remove(r)) => {
                assert_eq!(r.token.as_ref().map(shown).as_deref(), Some("value R"))
            }
            other => panic!("{other:?}"),
        }
        match parse(&args(&["remove", "--local"]), &none) {
            Ok(Command::Remove(r)) => assert!(r.token.is_none()),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(&args(&["remove"]), &none).expect_err("token"),
            CliError::Missing("token")
        );
        match parse(
            &args(&["run", "--jitconfig-file", "/tmp/j", "--once"]),
            &none,
        ) {
            Ok(Command::Run(r)) => {
                assert_eq!(
                    r.jit_config.as_ref().map(shown).as_deref(),
                    Some("file /tmp/j")
                );
                assert!(r.once);
            }
            other => panic!("{other:?}"),
        }
        match parse(&args(&["--jitconfig", "abc"]), &none) {
            Ok(Command::Run(r)) => {
                assert_eq!(
                    r.jit_config.as_ref().map(shown).as_deref(),
                    Some("value abc")
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&[], &none), Ok(Command::Run(_))));
        assert!(matches!(
            parse(&args(&["--version"]), &none),
            Ok(Command::Version)
        ));
        for line in [&["configure", "--version"][..], &["run", "--version"]] {
            assert!(matches!(parse(&args(line), &none), Ok(Command::Version)));
        }
        assert!(matches!(
            parse(&args(&["configure", "--help"]), &none),
            Ok(Command::Help(HelpTopic::Configure))
        ));
    }

    #[test]
    fn split_labels_trims_and_dedups() {
        assert_eq!(split_labels(" a,,b , A"), vec!["a", "b"]);
        assert!(split_labels(" , ").is_empty());
    }
}
