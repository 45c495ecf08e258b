use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<ModelCatalog, Vec<String>> {
    ModelCatalog::parse(text, Path::new("models.yaml"))
}

#[test]
fn builtin_parses() {
    let parsed = ModelCatalog::parse(BUILTIN_MODELS, Path::new("examples/models.yaml"));
    let catalog = parsed.expect("the built-in models file loads");
    for name in [
        "claude",
        "gemini-megacontext",
        "gemini-search",
        "gemini-media",
        "codex-auto",
        "codex-reasoning",
        "gemini",
        "codex",
        "claude-code",
        "codex-cli",
        "gemini-cli",
    ] {
        assert!(
            catalog.get(name).is_some(),
            "{name} is in the built-in file"
        );
    }
    assert_eq!(ModelCatalog::builtin().len(), catalog.len());
    let mega = catalog.get("gemini-megacontext").expect("megacontext");
    assert!(mega.context >= 1_000_000);
    for def in catalog.models.values() {
        assert!(
            def.context <= mega.context,
            "{} is larger than megacontext",
            def.name
        );
        if def.name != mega.name {
            assert!(def.context < mega.context, "{} ties megacontext", def.name);
        }
    }
    assert_eq!(
        catalog.larger_context_than("claude", 1_040_000).as_deref(),
        Some("gemini-megacontext")
    );
}

#[test]
fn a_full_model() {
    let catalog = parse(
        "models:
  claude:
    provider: anthropic
    model: claude-sonnet-4-5
    context: 200000
    max_output: 8192
    capabilities: [code, reasoning]
    price: {input: 0.003, output: 0.015}
    key_env: MY_KEY
    base_url: https://proxy.example/
    rate_limit: 50/min
    timeout: 90s
    fallback: local
  local:
    provider: openai
    base_url: http://localhost:11434/v1
    model: qwen
    context: 32768
    key_env: none
",
    )
    .expect("loads");
    let claude = catalog.get("claude").expect("claude");
    assert_eq!(claude.provider, Provider::Anthropic);
    assert_eq!(claude.model_id, "claude-sonnet-4-5");
    assert_eq!(claude.max_output, Some(8192));
    assert_eq!(claude.capabilities, ["code", "reasoning"]);
    assert_eq!(claude.key_env.as_deref(), Some("MY_KEY"));
    assert_eq!(claude.base_url.as_deref(), Some("https://proxy.example"));
    assert_eq!(
        claude.rate_limit,
        Some(RateLimit {
            count: 50,
            per: Duration::from_secs(60)
        })
    );
    assert_eq!(claude.timeout, Duration::from_secs(90));
    assert!((claude.cost(1000, 2000) - 0.033).abs() < 1e-12);
    let local = catalog.get("local").expect("local");
    assert_eq!(local.key_env, None);
    assert_eq!(local.price_in_per_1k, 0.0);
    assert_eq!(local.timeout, Duration::from_secs(120));
    assert_eq!(catalog.fallback_chain("claude"), ["local"]);
}

#[test]
fn defaults_per_provider() {
    let catalog = parse(
        r#"{"models": {
            "g": {"provider": "gemini", "model": "gemini-2.5-flash", "context": 1000},
            "c": {"provider": "codex-cli", "context": 1000}}}"#,
    )
    .expect("JSON loads too");
    let g = catalog.get("g").expect("g");
    assert_eq!(g.key_env.as_deref(), Some("GEMINI_API_KEY"));
    assert_eq!(
        g.base_url.as_deref(),
        Some("https://generativelanguage.googleapis.com")
    );
    let c = catalog.get("c").expect("c");
    assert!(c.is_cli());
    assert_eq!(c.program(), "codex");
    assert_eq!(c.model_id, "");
    assert_eq!(c.timeout, Duration::from_secs(600));
}

#[test]
fn every_problem_with_its_position() {
    let errors = parse(
        "models:
  a:
    provider: antropic
    model: x
    context: 0
  b:
    provider: openai
    contxt: 10
    price: {input: -1, outptu: 2}
    fallback: aa
    rate_limit: fast
    timeout: soon
  c:
    provider: claude-cli
    context: 5
    base_url: http://x
    capabilities: [serch]
extra: 1
",
    )
    .expect_err("invalid");
    let want = [
        "models.yaml:3:15: models.a.provider: unknown provider `antropic`, did you mean `anthropic`?",
        "models.yaml:5:14: models.a.context: expected a positive whole number of tokens, found 0",
        "models.yaml:8:5: models.b: unknown field `contxt`, did you mean `context`?",
        "models.yaml:9:24: models.b.price: unknown field `outptu`, did you mean `output`?",
        "models.yaml:6:3: models.b: missing field `model`",
        "models.yaml:6:3: models.b: missing field `context`",
        "models.yaml:9:20: models.b.price.input: expected USD per 1k tokens (a number >= 0), found -1",
        "models.yaml:11:17: models.b.rate_limit: invalid rate limit \"fast\" (expected `N/s`, `N/min` or `N/h`, e.g. `50/min`)",
        "models.yaml:12:14: models.b.timeout: bad duration `soon`: expected a number before `soon` (e.g. `30`, `500ms`, `5m`, `1h30m`)",
        "models.yaml:10:15: models.b.fallback: unknown model `aa`, did you mean `a`?",
        "models.yaml:17:20: models.c.capabilities: unknown capability \"serch\", did you mean `search`? (expected search, media, reasoning, code)",
        "models.yaml:16:15: models.c.base_url: only for HTTP providers, not claude-cli",
        "models.yaml:18:1: unknown field `extra`, expected one of: models",
    ];
    let mut got = errors.clone();
    got.sort();
    let mut want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(got, want, "{errors:#?}");
}

#[test]
fn syntax_errors_and_empty_files() {
    let errors = parse("models: [unclosed\n").expect_err("bad yaml");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("models.yaml:"), "{errors:?}");
    assert_eq!(
        parse("").expect_err("empty"),
        ["models.yaml: models file is empty: expected a `models:` mapping"]
    );
    assert_eq!(
        parse("other: 1\n").expect_err("no models"),
        [
            "models.yaml:1:1: unknown field `other`, expected one of: models",
            "models.yaml: missing field `models`"
        ]
    );
}

#[test]
fn fallback_chains_stop_at_cycles() {
    let catalog = parse(
        "models:
  a: {provider: openai, model: m, context: 10, fallback: b}
  b: {provider: openai, model: m, context: 10, fallback: c}
  c: {provider: openai, model: m, context: 10, fallback: a}
  d: {provider: openai, model: m, context: 10}
",
    )
    .expect("loads");
    assert_eq!(catalog.fallback_chain("a"), ["b", "c"]);
    assert_eq!(catalog.fallback_chain("c"), ["a", "b"]);
    assert!(catalog.fallback_chain("d").is_empty());
    assert!(catalog.fallback_chain("nope").is_empty());
    let self_loop = parse("models:\n  a: {provider: openai, model: m, context: 1, fallback: a}\n");
    assert_eq!(
        self_loop.expect_err("self"),
        ["models.yaml:2:57: models.a.fallback: a model cannot fall back to itself"]
    );
}

#[test]
fn larger_context() {
    let catalog = parse(
        "models:
  small: {provider: openai, model: m, context: 100}
  mid-b: {provider: openai, model: m, context: 500}
  mid-a: {provider: openai, model: m, context: 500}
  big: {provider: openai, model: m, context: 1000}
",
    )
    .expect("loads");
    let table = [
        ("small", 50, Some("mid-a")),
        ("small", 400, Some("mid-a")),
        ("small", 600, Some("big")),
        ("mid-a", 10, Some("big")),
        ("big", 10, None),
        ("small", 5000, None),
        ("unknown", 50, Some("small")),
    ];
    for (name, needed, want) in table {
        assert_eq!(
            catalog.larger_context_than(name, needed).as_deref(),
            want,
            "{name} {needed}"
        );
    }
}

#[test]
fn availability() {
    let catalog = parse(
        "models:
  keyed: {provider: anthropic, model: m, context: 10}
  optional: {provider: openai, model: m, context: 10, key_required: false}
  keyless: {provider: openai, model: m, context: 10, key_env: none}
  agent: {provider: claude-cli, context: 10, command: definitely-not-a-program-here}
  shell: {provider: codex-cli, context: 10, command: sh}
",
    )
    .expect("loads");
    let path = std::env::var("PATH").unwrap_or_default();
    let env = ModelEnv::fixed(BTreeMap::from([("PATH".to_owned(), path.clone())]));
    assert_eq!(catalog.available_in(&env), ["keyless", "optional", "shell"]);
    let reason = catalog
        .get("keyed")
        .and_then(|m| m.unavailable_reason(&env))
        .expect("no key");
    assert!(reason.contains("set ANTHROPIC_API_KEY"), "{reason}");
    let blank = ModelEnv::fixed(BTreeMap::from([
        ("PATH".to_owned(), path.clone()),
        ("ANTHROPIC_API_KEY".to_owned(), "  ".to_owned()),
    ]));
    assert!(!catalog.available_in(&blank).contains(&"keyed".to_owned()));
    let keyed = ModelEnv::fixed(BTreeMap::from([
        ("PATH".to_owned(), path),
        ("ANTHROPIC_API_KEY".to_owned(), "k".to_owned()),
    ]));
    assert!(catalog.available_in(&keyed).contains(&"keyed".to_owned()));
}

#[test]
fn token_estimates() {
    for (text, want) in [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("é", 1)] {
        assert_eq!(estimate_tokens(text), want, "{text:?}");
    }
}

#[test]
fn rate_limits() {
    use parse::parse_rate_limit;
    assert_eq!(
        parse_rate_limit("5/s").map(|r| r.to_string()).as_deref(),
        Some("5/s")
    );
    assert_eq!(
        parse_rate_limit("50 / min").map(|r| r.per),
        Some(Duration::from_secs(60))
    );
    assert_eq!(parse_rate_limit("1000/h").map(|r| r.count), Some(1000));
    for bad in ["0/s", "x/s", "5/day", "5", ""] {
        assert_eq!(parse_rate_limit(bad), None, "{bad}");
    }
}
