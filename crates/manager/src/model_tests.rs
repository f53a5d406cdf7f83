//! Tests of the validated types: names and ownership, sizes, scopes, proxies.
use super::*;
use proptest::prelude::*;

fn keys(app: &str, unit: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP_KEY.to_owned(), app.to_owned()),
        (UNIT_KEY.to_owned(), unit.to_owned()),
    ])
}

#[test]
fn generated_names_are_short_owned_hostnames() {
    let owner = Owner::new("runner-app", 3).expect("valid");
    let name = owner.new_runner_name();
    assert!(name.as_str().starts_with("runner-app-3-"));
    assert_eq!(name.as_str().len(), "runner-app-3-".len() + SUFFIX_LEN);
    assert_eq!(owner.parse_name(name.as_str()), Some(name.clone()));
    assert!(owner.owns_instance(name.as_str(), &owner.config_keys()));
}

#[test]
fn foo_unit_1_never_claims_foo_1_unit_0() {
    let foo1 = Owner::new("foo", 1).expect("valid");
    let foo_1_0 = Owner::new("foo-1", 0).expect("valid");
    let theirs = foo_1_0.new_runner_name();
    assert!(
        theirs.as_str().starts_with(&foo1.prefix()),
        "prefix collides"
    );
    assert_eq!(foo1.parse_name(theirs.as_str()), None);
    assert!(!foo1.owns_instance(theirs.as_str(), &foo_1_0.config_keys()));
    // And the other way round.
    let ours = foo1.new_runner_name();
    assert_eq!(foo_1_0.parse_name(ours.as_str()), None);
}

#[test]
fn ownership_needs_exact_keys_and_prefix() {
    let owner = Owner::new("foo", 1).expect("valid");
    let name = "foo-1-abcd1234";
    assert!(owner.owns_instance(name, &keys("foo", "1")));
    assert!(!owner.owns_instance(name, &BTreeMap::new()), "unlabelled");
    assert!(!owner.owns_instance(name, &keys("foo", "10")));
    assert!(!owner.owns_instance(name, &keys("foo-1", "0")));
    assert!(!owner.owns_instance(name, &keys("fo", "1")));
    assert!(!owner.owns_instance("foo-1-abcd123", &keys("foo", "1")));
    assert!(!owner.owns_instance("foo-1-ABCD1234", &keys("foo", "1")));
    assert!(!owner.owns_instance("foo-10-abcd1234", &keys("foo", "1")));
}

#[test]
fn app_names_are_validated() {
    for bad in [
        "",
        "Foo",
        "1foo",
        "foo-",
        "foo_bar",
        "foo bar",
        &"a".repeat(60),
    ] {
        assert!(Owner::new(bad, 0).is_err(), "{bad:?} accepted");
    }
    assert!(Owner::new("a-b-9", 12).is_ok());
}

#[test]
fn sizes_and_profile_names() {
    let r = Resources::new(2, "7GiB", "10GiB").expect("valid");
    assert_eq!(r.profile_name(), "cpu-2-mem-7GiB-disk-10GiB");
    assert_eq!(r.memory.bytes(), 7 << 30);
    for bad in [
        "",
        "7",
        "GiB",
        "7gib",
        "-1GiB",
        "0GiB",
        "7 GiB",
        "99999999999999TiB",
    ] {
        assert!(Resources::new(2, bad, "10GiB").is_err(), "{bad:?} accepted");
    }
    assert_eq!(Resources::new(0, "1GiB", "1GiB"), Err(ModelError::Cpu(0)));
}

#[test]
fn github_paths() {
    let repo = GitHubPath::parse("o/r", "g").expect("valid");
    assert_eq!((repo.path(), repo.group()), ("o/r".to_owned(), None));
    let org = GitHubPath::parse("org", "").expect("valid");
    assert_eq!(org.group(), Some("default"));
    assert_eq!(org.kind(), "organisation");
    for bad in ["", "a/b/c", "/r", "o/", "a b", "-o", "o/..", "enterprises/"] {
        assert!(GitHubPath::parse(bad, "").is_err(), "{bad:?} accepted");
    }
    assert_eq!(
        GitHubPath::parse("a/b/c", "").map_err(|e| e.to_string()),
        Err("invalid path \"a/b/c\": more than one '/' (expected \"owner/repo\", an organisation or \"enterprises/<slug>\")".to_owned())
    );
}

/// An enterprise is neither a repository `enterprises`/`acme` nor loses its group.
#[test]
fn enterprise_paths_keep_their_group() {
    let enterprise = GitHubPath::parse("enterprises/acme", "gpu").expect("valid");
    assert_eq!(
        enterprise,
        GitHubPath::Enterprise {
            slug: "acme".into(),
            group: "gpu".into()
        }
    );
    assert_eq!(enterprise.path(), "enterprises/acme");
    assert_eq!(enterprise.to_string(), "enterprises/acme");
    assert_eq!(enterprise.group(), Some("gpu"));
    assert_eq!(enterprise.kind(), "enterprise");
    let default = GitHubPath::parse("enterprises/acme", "").expect("valid");
    assert_eq!(default.group(), Some("default"));
}

#[test]
fn proxy_urls_mask_credentials_but_expose_them() {
    let url = ProxyUrl::parse(" http://user:pa%40ss@proxy:3128 ").expect("valid");
    assert_eq!(url.expose(), "http://user:pa%40ss@proxy:3128");
    assert_eq!(url.to_string(), "http://user:redacted@proxy:3128");
    assert_eq!(
        format!("{url:?}"),
        "ProxyUrl(http://user:redacted@proxy:3128)"
    );
    let token = ProxyUrl::parse("https://tok3n@proxy:3129/").expect("valid");
    assert_eq!(token.expose(), "https://tok3n@proxy:3129");
    assert!(!format!("{token} {token:?}").contains("tok3n"));
    let proxies = ProxySettings {
        http: Some(url),
        https: Some(token),
        no_proxy: None,
    };
    assert!(!format!("{proxies:?}").contains("pa%40ss"));
    assert!(!format!("{proxies:?}").contains("tok3n"));
    assert_eq!(
        proxies.expose_http(),
        Some("http://user:pa%40ss@proxy:3128")
    );
    let env = proxies.env_pairs();
    assert!(env.contains(&("HTTP_PROXY".into(), "http://user:pa%40ss@proxy:3128".into())));
    assert!(env.contains(&("https_proxy".into(), "https://tok3n@proxy:3129".into())));
    // A control character cannot reach an environment file.
    let odd = ProxyUrl::parse("http://proxy:3128/a\nB=1").expect("valid");
    assert!(!odd.expose().contains('\n'));
    assert_eq!(
        ProxyUrl::parse("socks5://user:SECRET@proxy:1080").map_err(|e| e.to_string()),
        Err("unsupported proxy URL: expected http://HOST:PORT or https://HOST:PORT".into())
    );
    let err = ProxyUrl::parse("http://user:SECRET@").expect_err("no host");
    assert!(!err.to_string().contains("SECRET"), "{err}");
}

#[test]
fn sizes_parse_with_reasons() {
    let check = |text: &str, expected: Result<u64, SizeError>| {
        assert_eq!(text.parse::<Size>().map(|s| s.bytes()), expected, "{text}");
    };
    check("512MiB", Ok(512 << 20));
    check("2GB", Ok(2_000_000_000));
    check("3kB", Ok(3_000));
    check("", Err(SizeError::Syntax));
    check("7", Err(SizeError::Syntax));
    check("7 GiB", Err(SizeError::Unit(" GiB".into())));
    check("7XB", Err(SizeError::Unit("XB".into())));
    check("0GiB", Err(SizeError::Zero));
    check("99999999999TiB", Err(SizeError::Overflow));
    check("999999999999999999999B", Err(SizeError::Overflow));
    let size: Size = "7GiB".parse().expect("valid");
    assert_eq!(
        (size.to_string(), size.as_str()),
        ("7GiB".to_owned(), "7GiB")
    );
}

#[test]
fn proxies_are_never_mutated() {
    let proxies = ProxySettings {
        http: Some("http://p:3128".parse().expect("valid")),
        https: None,
        no_proxy: None,
    };
    let a = proxies.with_no_proxy(&["10.0.0.1"]);
    let b = proxies.with_no_proxy(&["10.0.0.1"]);
    assert_eq!(proxies.no_proxy, None);
    assert_eq!(a.no_proxy.as_deref(), Some("10.0.0.1"));
    assert_eq!(a, b);
    let again = a.with_no_proxy(&["10.0.0.1", "localhost"]);
    assert_eq!(again.no_proxy.as_deref(), Some("10.0.0.1,localhost"));
    assert_eq!(
        a.env_pairs(),
        vec![
            ("http_proxy".into(), "http://p:3128".into()),
            ("HTTP_PROXY".into(), "http://p:3128".into()),
            ("no_proxy".into(), "10.0.0.1".into()),
            ("NO_PROXY".into(), "10.0.0.1".into()),
        ]
    );
    assert!(ProxySettings::default().env_pairs().is_empty());
}

#[test]
fn secrets_redact() {
    let s = Secret::new("ghs_topsecret");
    assert!(!format!("{s:?} {s}").contains("topsecret"));
    assert_eq!(s.expose(), "ghs_topsecret");
}

proptest! {
    #[test]
    fn no_owner_claims_another_owners_names(
        a in "[a-z][a-z0-9]{0,3}(-[a-z0-9]{1,3}){0,2}", ua in 0u32..20,
        b in "[a-z][a-z0-9]{0,3}(-[a-z0-9]{1,3}){0,2}", ub in 0u32..20,
    ) {
        prop_assume!((a.as_str(), ua) != (b.as_str(), ub));
        let oa = Owner::new(&a, ua).expect("valid");
        let ob = Owner::new(&b, ub).expect("valid");
        let name = ob.new_runner_name();
        prop_assert!(oa.parse_name(name.as_str()).is_none());
        prop_assert!(!oa.owns_instance(name.as_str(), &ob.config_keys()));
        prop_assert!(ob.owns_instance(name.as_str(), &ob.config_keys()));
    }
}
