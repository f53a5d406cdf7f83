//! `[[pools]]`, `[demand]`, `server.public_url` / `server.hook_id` and `--route`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use manager::pool::{PoolName, Sizing};
use manager::Resources;

use super::*;

struct NoEnv;

impl Environment for NoEnv {
    fn var(&self, _name: &str) -> Option<String> {
        None
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} not found", path.display()),
        ))
    }
    fn file_exists(&self, _path: &Path) -> bool {
        false
    }
}

const ORG: &str = r#"
[github]
path = "my-org"
runner_group = "linux"
token = "ghp_TEST"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/rm"), &NoEnv)
}

fn with_org(rest: &str) -> String {
    format!("{ORG}\n{rest}")
}

/// The errors of an invalid config, as `key: reason`.
fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(ConfigError::Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("unexpected error {other}"),
    }
}

/// Asserts the config's only error.
fn only_error(text: &str, expected: &str) {
    assert_eq!(errors(text), [expected], "{text}");
}

fn size(text: &str) -> Size {
    text.parse().expect("valid size")
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

const TWO_POOLS: &str = r#"
[lxd]
image = "noble"
instance_type = "container"

[runners]
cpu = 4
memory = "8GiB"
disk = "30GiB"
labels = ["linux-build"]
registration = "jit"

[[pools]]
name = "small"
image = "jammy"
instance_type = "virtual-machine"
cpu = 2
memory = "4GiB"
disk = "20GiB"
profiles = ["gpu", "net"]
labels = ["small"]
runner_group = "fast"
registration = "token"
min_idle = 2
max = 20
priority = 5

[[pools]]
name = "fallback"
max = 3
"#;

#[test]
fn two_pools_parse_into_pool_specs_with_fallbacks() {
    let config = parse(&format!("app_name = \"ci\"\n{}", with_org(TWO_POOLS))).expect("valid");
    assert_eq!(
        config.pools,
        [
            PoolSpec {
                name: PoolName::new("small").unwrap(),
                image: "jammy".into(),
                instance_type: InstanceType::VirtualMachine,
                resources: Resources::from_sizes(2, size("4GiB"), size("20GiB")).unwrap(),
                profiles: strings(&["gpu", "net"]),
                labels: strings(&["small"]),
                runner_group: Some("fast".into()),
                registration: RegistrationMode::Token,
                sizing: Sizing::Demand {
                    min_idle: 2,
                    max: 20
                },
                priority: 5,
                marked: true,
                image_mode: manager::pool::ImageMode::Plain,
                placement: manager::pool::Placement::default(),
            },
            PoolSpec {
                name: PoolName::new("fallback").unwrap(),
                image: "noble".into(),
                instance_type: InstanceType::Container,
                resources: Resources::from_sizes(4, size("8GiB"), size("30GiB")).unwrap(),
                profiles: Vec::new(),
                labels: strings(&["linux-build"]),
                runner_group: None,
                registration: RegistrationMode::Jit,
                sizing: Sizing::Demand {
                    min_idle: 0,
                    max: 3
                },
                priority: 0,
                marked: true,
                image_mode: manager::pool::ImageMode::Plain,
                placement: manager::pool::Placement::default(),
            },
        ]
    );
    assert_eq!(config.pool_specs(), config.pools);
    let demands = config.pool_demands();
    assert_eq!(demands.len(), 2);
    let (os, arch) = manager::runner_bin::platform();
    let expected: BTreeSet<String> = [
        "self-hosted",
        os,
        arch,
        "ci",
        "jammy",
        "small",
        "runner-manager-pool:small",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(demands[0].labels, expected);
    assert_eq!(demands[0].priority, 5);

    let summary = config.summary();
    assert_eq!(summary.pools.len(), 2);
    assert_eq!(summary.pools[0].runner_group, "fast");
    assert_eq!(summary.pools[1].runner_group, "linux", "the scope's group");
    assert_eq!(
        summary.pools[0].labels,
        expected.into_iter().collect::<Vec<_>>()
    );
    assert_eq!(
        (
            summary.pools[0].min_idle,
            summary.pools[0].max,
            summary.pools[0].priority
        ),
        (2, 20, 5)
    );
    assert_eq!(summary.pools[1].instance_type, "container");
    assert_eq!(summary.pools[1].cpu, 4);
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["pools"][0]["name"], "small");
    assert_eq!(json["demand"]["queued_stale_seconds"], 600);
    assert!(json.get("route").is_none(), "no route without --route");
}

#[test]
fn the_single_pool_form_is_unchanged() {
    let config = parse(&with_org("[runners]\nquantity = 3\nlabels = [\"gpu\"]\n")).expect("valid");
    assert!(config.pools.is_empty());
    assert_eq!(config.runners.quantity, 3);
    let specs = config.pool_specs();
    assert_eq!(specs.len(), 1);
    let default = &specs[0];
    assert_eq!(default.name.as_str(), PoolName::DEFAULT);
    assert!(
        !default.marked,
        "the single-pool form adds no pool key or label"
    );
    assert_eq!(default.sizing, Sizing::Fixed(3));
    assert_eq!(default.labels, ["gpu"]);
    assert_eq!(default.image, "jammy");
    assert_eq!(default.runner_group, None);
    let summary = config.summary();
    assert!(summary.pools.is_empty());
    assert_eq!(summary.quantity, 3);
    assert_eq!(summary.render_pools(), "", "nothing more is printed");
}

#[test]
fn demand_and_delivery_defaults() {
    let config = parse(ORG).expect("valid");
    assert_eq!(config.demand, DemandConfig::default());
    assert_eq!(config.demand.settings.stale_after, Duration::from_secs(600));
    assert_eq!(config.demand.settings.max_idle_age, None);
    assert_eq!(
        config.demand.delivery_check_interval,
        Duration::from_secs(300)
    );
    assert_eq!(config.demand.queued_expiry, Duration::from_secs(86_400));
    assert_eq!(config.server.public_url, None);
    assert_eq!(config.server.hook_id, None);
}

#[test]
fn demand_and_delivery_keys() {
    let config = parse(&with_org(
        r#"
[server]
public_url = "https://hooks.example.com/webhook"
hook_id = 42

[demand]
queued_stale_seconds = 120
max_idle_age_seconds = 3600
delivery_check_seconds = 60
queued_expiry_seconds = 7200
"#,
    ))
    .expect("valid");
    assert_eq!(config.demand.settings.stale_after, Duration::from_secs(120));
    assert_eq!(
        config.demand.settings.max_idle_age,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(
        config.demand.delivery_check_interval,
        Duration::from_secs(60)
    );
    assert_eq!(config.demand.queued_expiry, Duration::from_secs(7200));
    assert_eq!(
        config.server.public_url.as_ref().map(Url::as_str),
        Some("https://hooks.example.com/webhook")
    );
    assert_eq!(config.server.hook_id, Some(42));
    let summary = config.summary();
    assert_eq!(summary.hook_id, Some(42));
    assert_eq!(summary.demand.max_idle_age_seconds, 3600);
    // An empty public_url is unset.
    let config = parse(&with_org("[server]\npublic_url = \"\"\n")).expect("valid");
    assert_eq!(config.server.public_url, None);
}

#[test]
fn demand_and_delivery_errors() {
    for (text, expected) in [
        (
            "[demand]\nqueued_stale_seconds = 0\n",
            "demand.queued_stale_seconds: must be between 10 and 86400 seconds",
        ),
        (
            "[demand]\nmax_idle_age_seconds = 60\n",
            "demand.max_idle_age_seconds: must be 0 (never) or between 300 and 2592000 seconds",
        ),
        (
            "[demand]\ndelivery_check_seconds = 5\n",
            "demand.delivery_check_seconds: must be between 10 and 86400 seconds",
        ),
        (
            "[demand]\ndelivery_check_seconds = 86401\n",
            "demand.delivery_check_seconds: must be between 10 and 86400 seconds",
        ),
        (
            "[demand]\nqueued_expiry_seconds = 30\n",
            "demand.queued_expiry_seconds: must be between 60 and 604800 seconds",
        ),
        (
            "[demand]\nqueued_stale_seconds = 900\nqueued_expiry_seconds = 600\n",
            "demand.queued_expiry_seconds: must be more than demand.queued_stale_seconds (900)",
        ),
        (
            "[demand]\ncolour = 1\n",
            "demand.colour: unknown key (expected one of `queued_stale_seconds`, `max_idle_age_seconds`, `delivery_check_seconds`, `queued_expiry_seconds`)",
        ),
        (
            "[demand]\nqueued_stale_seconds = \"600\"\n",
            "demand.queued_stale_seconds: invalid type: string \"600\", expected a non-negative integer",
        ),
        (
            "[server]\npublic_url = \"ftp://hooks.example.com\"\n",
            "server.public_url: unsupported URL \"ftp://hooks.example.com/\": expected https://HOST or http://HOST",
        ),
        (
            "[server]\nhook_id = 0\n",
            "server.hook_id: must be greater than zero",
        ),
    ] {
        only_error(&with_org(text), expected);
    }
}

/// A valid pool, with `extra` keys appended.
fn pool(name: &str, extra: &str) -> String {
    format!("[[pools]]\nname = \"{name}\"\nmax = 3\n{extra}\n")
}

#[test]
fn pool_errors_name_the_key() {
    for (pools, expected) in [
        (
            pool("Small", ""),
            "pools[0].name: invalid pool name \"Small\": use lowercase letters, digits and '-', starting with a letter, at most 32 characters",
        ),
        (
            "[[pools]]\nmax = 3\n".to_owned(),
            "pools[0].name: missing: a unique name, e.g. \"small\" (lowercase letters, digits and '-', at most 32 characters)",
        ),
        (
            pool("a", "labels = [\"a\"]") + &pool("a", "labels = [\"b\"]"),
            "pools[1].name: duplicate pool name \"a\": also pools[0].name",
        ),
        (
            pool("a", "min_idle = 5"),
            "pools[0].min_idle: 5 is more than max (3)",
        ),
        (
            "[[pools]]\nname = \"a\"\n".to_owned(),
            "pools[0].max: missing: the most runners this pool may have, busy ones included (1 to 10000)",
        ),
        (
            "[[pools]]\nname = \"a\"\nmax = 0\n".to_owned(),
            "pools[0].max: must be between 1 and 10000 (GitHub's limit per runner group)",
        ),
        (
            "[[pools]]\nname = \"a\"\nmax = 10001\n".to_owned(),
            "pools[0].max: must be between 1 and 10000 (GitHub's limit per runner group)",
        ),
        (
            pool("a", "cpu = 0"),
            "pools[0].cpu: must be between 1 and 1024",
        ),
        (
            pool("a", "cpu = 1025"),
            "pools[0].cpu: must be between 1 and 1024",
        ),
        (
            pool("a", "memory = \"7XB\""),
            "pools[0].memory: invalid size \"7XB\": unknown unit \"XB\" (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)",
        ),
        (
            pool("a", "disk = \"0GiB\""),
            "pools[0].disk: invalid size \"0GiB\": must be greater than zero",
        ),
        (
            pool("a", "image = \"two words\""),
            "pools[0].image: invalid image alias \"two words\": must be non-empty, without spaces or commas",
        ),
        (
            pool("a", "instance_type = \"vm\""),
            "pools[0].instance_type: unknown variant `vm`, expected `container` or `virtual-machine`",
        ),
        (
            pool("a", "registration = \"oauth\""),
            "pools[0].registration: unknown variant `oauth`, expected `token` or `jit`",
        ),
        (
            pool("a", "labels = [\"has space\"]"),
            "pools[0].labels[0]: invalid label \"has space\": 1 to 100 characters, without spaces or commas",
        ),
        (
            pool("a", "labels = [\"ok\", \"Runner-Manager-Pool:x\"]"),
            "pools[0].labels[1]: labels starting with \"runner-manager-pool:\" are reserved: the manager gives each runner its pool's",
        ),
        (
            pool("a", "profiles = [\"a/b\"]"),
            "pools[0].profiles[0]: invalid profile name \"a/b\": 1 to 63 characters, without spaces or '/'",
        ),
        (
            pool("a", "runner_group = \" \""),
            "pools[0].runner_group: must be a non-empty group name",
        ),
        (
            pool("a", "priority = \"high\""),
            "pools[0].priority: invalid type: string \"high\", expected i32",
        ),
        (
            pool("a", "colour = \"blue\""),
            "pools[0].colour: unknown key (expected one of `name`, `image`, `instance_type`, `cpu`, `memory`, `disk`, `profiles`, `labels`, `runner_group`, `registration`, `min_idle`, `max`, `priority`, `image_mode`, `scaling`, `scale_set_name`, `placement`, `target`)",
        ),
        (
            pool("a", "") + &pool("b", "colour = 1"),
            "pools[1].colour: unknown key (expected one of `name`, `image`, `instance_type`, `cpu`, `memory`, `disk`, `profiles`, `labels`, `runner_group`, `registration`, `min_idle`, `max`, `priority`, `image_mode`, `scaling`, `scale_set_name`, `placement`, `target`)",
        ),
        (
            "[pools]\nname = \"a\"\n".to_owned(),
            "pools: invalid type: map, expected a sequence",
        ),
    ] {
        only_error(&with_org(&pools), expected);
    }
}

#[test]
fn pools_with_the_same_labels_and_priority_cannot_be_told_apart() {
    // The image counts as a label; case and order do not matter.
    let text = with_org(
        &(pool("small", "labels = [\"small\", \"x\"]")
            + &pool("other", "labels = [\"gpu\"]")
            + &pool("copy", "labels = [\"X\", \"SMALL\", \"jammy\"]")),
    );
    only_error(
        &text,
        "pools[2].labels: same labels and priority as pools[0] (\"small\"): a job could not be routed between them; change the labels or the priority",
    );
    // The labels fall back to runners.labels, the image to lxd.image.
    let text = with_org(&format!(
        "[runners]\nlabels = [\"small\"]\n{}{}",
        pool("a", ""),
        pool("b", "image = \"jammy\"")
    ));
    only_error(
        &text,
        "pools[1].labels: same labels and priority as pools[0] (\"a\"): a job could not be routed between them; change the labels or the priority",
    );
    // A different priority, or a different image, tells them apart.
    let text =
        with_org(&(pool("a", "labels = [\"x\"]") + &pool("b", "labels = [\"x\"]\npriority = 1")));
    assert!(parse(&text).is_ok());
    let text = with_org(
        &(pool("a", "labels = [\"x\"]") + &pool("b", "labels = [\"x\"]\nimage = \"noble\"")),
    );
    assert!(parse(&text).is_ok());
}

#[test]
fn quantity_is_not_used_with_pools() {
    only_error(
        &with_org(&format!("[runners]\nquantity = 2\n{}", pool("a", ""))),
        "runners.quantity: not used with [[pools]]; size each pool with min_idle and max",
    );
}

#[test]
fn a_repository_has_no_runner_groups() {
    let text = format!(
        "[github]\npath = \"owner/repo\"\ntoken = \"t\"\n{}",
        pool("a", "runner_group = \"default\"")
    );
    only_error(
        &text,
        "pools[0].runner_group: runner groups exist only for an organisation or enterprise, but github.path \"owner/repo\" is a repository",
    );
    // Without runner_group a pool of a repository is fine.
    let text = format!(
        "[github]\npath = \"owner/repo\"\ntoken = \"t\"\n{}",
        pool("a", "")
    );
    let config = parse(&text).expect("valid");
    assert_eq!(config.pools[0].runner_group, None);
    assert_eq!(config.summary().pools[0].runner_group, "default");
}

#[test]
fn every_pool_problem_is_reported_at_once() {
    let text = with_org(
        &(pool("a", "cpu = 0\nmin_idle = 4")
            + "[[pools]]\nname = \"a\"\nmax = 0\ncolour_free = 1\n"),
    );
    // Unknown keys stop parsing first.
    assert_eq!(errors(&text).len(), 1);
    let text = with_org(
        &(pool("a", "cpu = 0\nmin_idle = 4") + "[[pools]]\nname = \"a\"\nmax = 0\npriority = 1\n"),
    );
    let keys: Vec<String> = match parse(&text) {
        Err(err) => err.keys().into_iter().map(str::to_owned).collect(),
        Ok(_) => panic!("invalid"),
    };
    assert_eq!(
        keys,
        [
            "pools[0].cpu",
            "pools[0].min_idle",
            "pools[1].max",
            "pools[1].name"
        ]
    );
}

#[test]
fn routes_follow_labels_then_priority() {
    let text = with_org(
        r#"
[[pools]]
name = "small"
labels = ["small"]
max = 5
priority = 10

[[pools]]
name = "large"
labels = ["large"]
max = 2

[[pools]]
name = "big"
labels = ["large"]
image = "noble"
max = 2
"#,
    );
    let config = parse(&text).expect("valid");
    let route = config.route(&strings(&["self-hosted", "SMALL"]));
    assert_eq!(route.pool.as_deref(), Some("small"));
    assert_eq!(route.candidates.len(), 1);
    // Every pool matches: priority first, then the name.
    let route = config.route(&strings(&["self-hosted", " linux "]));
    assert_eq!(route.labels, ["self-hosted", "linux"]);
    let order: Vec<&str> = route.candidates.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(order, ["small", "big", "large"]);
    let route = config.route(&strings(&["self-hosted", "gpu"]));
    assert_eq!(route.pool, None);
    assert!(route.candidates.is_empty());

    let mut summary = config.summary();
    summary.route = Some(config.route(&strings(&["self-hosted", "large"])));
    let text = summary.render_pools();
    assert!(
        text.contains("route           runs-on [self-hosted, large]: pool \"big\" (priority 0)\n"),
        "{text}"
    );
    assert!(text.contains("then \"large\" (priority 0)"), "{text}");
    assert!(text.contains(ROUTE_NOTE), "{text}");
}

#[test]
fn the_single_pool_form_routes_to_default() {
    let config = parse(&with_org("[runners]\nlabels = [\"gpu\"]\n")).expect("valid");
    let route = config.route(&strings(&["self-hosted", "gpu", "github-runner"]));
    assert_eq!(route.pool.as_deref(), Some("default"));
    assert_eq!(config.route(&strings(&["large"])).pool, None);
}

#[test]
fn the_pools_example_is_valid() {
    let text = include_str!("../../../../deploy/config.pools.example.toml");
    let config = parse(text).expect("deploy/config.pools.example.toml is valid");
    let names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["small", "large", "gpu"]);
    assert_eq!(config.pool_demands().len(), 3);
    let scale_sets: Vec<&str> = config
        .scale_sets
        .pools
        .iter()
        .map(|s| s.scale_set_name.as_str())
        .collect();
    assert_eq!(scale_sets, ["ci-gpu"], "the scale-set pool");
    assert_eq!(
        config.pools[1].sizing,
        Sizing::Demand {
            min_idle: 0,
            max: 4
        }
    );
    assert_eq!(config.pools[1].image, "jammy", "from [lxd]");
    assert_eq!(
        config.pools[1].registration,
        RegistrationMode::Jit,
        "from [runners]"
    );
    assert!(config.server.public_url.is_some());
    let route = config.route(&strings(&["self-hosted"]));
    let order: Vec<&str> = route.candidates.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        order,
        ["small", "large"],
        "a scale-set pool takes no webhook job"
    );
    assert_eq!(config.route(&strings(&["gpu"])).pool, None);
}

/// `scaling = "scaleset"` and `[scaleset]`.
mod scaleset {
    use super::*;

    fn config_text(pools: &str) -> String {
        format!("app_name = \"app\"\n[github]\npath = \"my-org\"\ntoken = \"ghp_TEST\"\n{pools}")
    }

    fn parse(pools: &str) -> Result<Config, ConfigError> {
        super::parse(&config_text(pools))
    }

    fn errors(pools: &str) -> Vec<String> {
        super::errors(&config_text(pools))
    }

    #[test]
    fn a_scaleset_pool_is_one_scale_set_named_after_app_and_pool() {
        let config = parse(
            r#"
[[pools]]
name = "web"
max = 3

[[pools]]
name = "ss"
labels = ["gpu"]
registration = "jit"
scaling = "scaleset"
min_idle = 1
max = 8

[[pools]]
name = "named"
labels = ["named"]
registration = "jit"
scaling = "scaleset"
scale_set_name = "my-set"
max = 2

[scaleset]
standby_backoff_min_ms = 100
standby_backoff_max_ms = 400
"#,
        )
        .unwrap();
        let sets = &config.scale_sets;
        let names: Vec<_> = sets
            .pools
            .iter()
            .map(|p| {
                (
                    p.pool.as_str(),
                    p.scale_set_name.as_str(),
                    p.min_idle,
                    p.max,
                )
            })
            .collect();
        assert_eq!(names, [("ss", "app-ss", 1, 8), ("named", "my-set", 0, 2)]);
        assert!(sets.pools[0].labels.contains(&"gpu".to_owned()));
        assert!(sets.pools[0]
            .labels
            .contains(&"runner-manager-pool:ss".to_owned()));
        assert_eq!(sets.settings.standby_min, Duration::from_millis(100));
        assert_eq!(sets.settings.standby_max, Duration::from_millis(400));
        // The default stays webhook sizing.
        assert_eq!(config.pools.len(), 3);
    }

    #[test]
    fn scaleset_needs_jit_and_scale_set_name_needs_scaleset() {
        let errors = errors(
            r#"
[[pools]]
name = "ss"
registration = "token"
scaling = "scaleset"
max = 2

[[pools]]
name = "web"
labels = ["web"]
scale_set_name = "x"
max = 2
"#,
        );
        assert_eq!(
            errors,
            [
                "pools[0].registration: scaling = \"scaleset\" needs registration = \"jit\" (the scale set issues each runner's JIT config)",
                "pools[1].scale_set_name: only for a pool with scaling = \"scaleset\"",
            ]
        );
    }

    #[test]
    fn two_pools_cannot_share_a_scale_set_and_backoffs_are_ordered() {
        let errors = errors(
            r#"
[[pools]]
name = "a"
registration = "jit"
scaling = "scaleset"
scale_set_name = "Same"
max = 2

[[pools]]
name = "b"
labels = ["b"]
registration = "jit"
scaling = "scaleset"
scale_set_name = "same"
max = 2

[scaleset]
error_backoff_min_ms = 500
error_backoff_max_ms = 100
"#,
        );
        assert_eq!(
            errors,
            [
                "pools[1].scale_set_name: \"same\" is the scale set of another pool",
                "scaleset.error_backoff_max_ms: the backoff's minimum must be above 0 and its maximum at least the minimum",
            ]
        );
    }

    #[test]
    fn scaling_is_only_a_pool_key() {
        let err = Config::parse(
            "[github]\npath = \"o\"\ntoken = \"t\"\n[runners]\nquantity = 1\nscaling = \"scaleset\"\n",
            Path::new("/etc/rm"),
            &NoEnv,
        )
        .unwrap_err();
        assert!(err.to_string().contains("scaling"), "{err}");
    }
}
