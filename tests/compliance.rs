//! Compliance operations: `subject` (a data subject's tokens, and their records on a real
//! broker's topic), `reidentify` (decrypting `encrypt` fields, and what it refuses) and
//! `audit report` (Markdown, escaped HTML, and the HTML page as headless Chromium draws it).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{Run, Scratch};

const POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schemas/coupon_redemption.policy.toml"
);
const EXAMPLE_EVENT: &str = include_str!("../schemas/coupon_redemption.json");

/// A policy with an `encrypt` field, for `reidentify`.
const ENCRYPT_POLICY: &str = r#"
tenant_field = "tenant"
required = ["event_id"]
[fields]
event_id = "keep"
tenant = "keep"
"customer.email" = { action = "token", domain = "email", normalizer = "email" }
"customer.birth_date" = { action = "encrypt", domain = "birth" }
"#;

/// The example event of tenant brand-a with another id and customer.
fn event(id: &str, email: &str, card: &str) -> Value {
    let mut event: Value = serde_json::from_str(EXAMPLE_EVENT).unwrap();
    event["event_id"] = id.into();
    event["tenant"] = "brand-a".into();
    event["customer"]["email"] = email.into();
    event["customer"]["loyalty_card"] = card.into();
    event
}

/// `pseudonymize` of `events` with `policy` under the tenant's active version: the output lines.
fn pseudonymize(s: &Scratch, policy: &str, events: &[Value]) -> Vec<String> {
    let input: String = events.iter().map(|e| format!("{e}\n")).collect();
    let out = s
        .run_with_stdin(
            &[
                "pseudonymize",
                "--policy",
                policy,
                "--keyring",
                s.keyring.to_str().unwrap(),
                "--kek-file",
                s.kek.to_str().unwrap(),
            ],
            Some(input.as_bytes()),
        )
        .ok();
    let lines: Vec<String> = out.lines().map(String::from).collect();
    assert_eq!(
        lines.len(),
        events.len(),
        "every event pseudonymized: {out}"
    );
    lines
}

/// `subject --policy P --keyring K --kek-file F --tenant brand-a ARGS`.
fn subject(s: &Scratch, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut all = vec![
        "subject",
        "--policy",
        POLICY,
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        s.kek.to_str().unwrap(),
        "--tenant",
        "brand-a",
    ];
    all.extend_from_slice(args);
    s.run_with_stdin(&all, stdin)
}

/// `lookup` of one value: the tokens per version, as `(version, token)`.
fn lookup(s: &Scratch, domain: &str, normalizer: &str, value: &str) -> Vec<(u64, String)> {
    s.run(&[
        "lookup",
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        s.kek.to_str().unwrap(),
        "--tenant",
        "brand-a",
        "--domain",
        domain,
        "--normalizer",
        normalizer,
        "--ticket",
        "DSR-42",
        value,
    ])
    .ok()
    .lines()
    .map(|line| {
        let (version, token) = line.split_once(' ').unwrap();
        (version.parse().unwrap(), token.to_string())
    })
    .collect()
}

/// The tokens of an answer for one field, as `(version, token)`.
fn tokens_of(answer: &Value, field: &str) -> Vec<(u64, String)> {
    answer["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["field"] == field)
        .map(|t| {
            (
                t["version"].as_u64().unwrap(),
                t["token"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The audit log's entries.
fn entries(s: &Scratch) -> Vec<Value> {
    std::fs::read_to_string(s.audit_log())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn subject_gives_lookups_tokens_per_field_and_version_and_audits_no_value() {
    let s = Scratch::with_tenants(&["brand-a"]);
    s.keys(&["rotate", "--tenant", "brand-a"]).ok();
    s.keys(&["rotate", "--tenant", "brand-a"]).ok();
    s.keys(&["destroy", "--tenant", "brand-a", "--version", "1"])
        .ok();
    let answer: Value = serde_json::from_str(
        &subject(
            &s,
            &[
                "--email",
                "  Alice@Example.COM",
                "--phone",
                "-",
                "--value",
                "coupon.coupon_code=-",
                "--ticket",
                "DSR-42",
                "--json",
            ],
            Some(b"+33 6 12 34 56 78\nSPR-8F3K-22QX\n"),
        )
        .ok(),
    )
    .unwrap();
    assert_eq!(
        tokens_of(&answer, "customer.email"),
        lookup(&s, "email", "email", "alice@example.com")
    );
    assert_eq!(
        tokens_of(&answer, "customer.phone"),
        lookup(&s, "phone", "digits", "+33612345678")
    );
    assert_eq!(
        tokens_of(&answer, "coupon.coupon_code"),
        lookup(&s, "coupon", "exact", "SPR-8F3K-22QX")
    );
    assert_eq!(
        tokens_of(&answer, "customer.email")
            .iter()
            .map(|(v, _)| *v)
            .collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(answer["destroyed_versions"][0]["version"], 1);
    assert_eq!(answer["ticket"], "DSR-42");

    let text = subject(
        &s,
        &[
            "--loyalty-card",
            "6280 0012 3456 7890",
            "--ticket",
            "DSR-43",
        ],
        None,
    )
    .ok();
    assert!(
        text.contains("v1: destroyed on ") && text.contains(": tokens cannot be computed"),
        "{text}"
    );
    assert!(text.contains("customer.loyalty_card  3"), "{text}");

    let log = std::fs::read_to_string(s.audit_log()).unwrap();
    let requests: Vec<Value> = entries(&s)
        .into_iter()
        .filter(|e| e["action"] == "subject")
        .collect();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0]["details"],
        "ticket=DSR-42 fields=customer.email,customer.phone,coupon.coupon_code versions=2,3 destroyed=1"
    );
    for secret in ["alice", "Alice", "612345678", "SPR-8F3K", "6280 0012"] {
        assert!(!log.contains(secret), "{secret} is on the audit trail");
    }
    for (_, token) in tokens_of(&answer, "customer.email") {
        assert!(!log.contains(&token), "a token is on the audit trail");
    }
    s.audit_verify().ok();
}

#[test]
fn subject_refuses_what_it_cannot_search_for_without_echoing_values() {
    let s = Scratch::with_tenants(&["brand-a"]);
    let cases: [(&[&str], &str); 6] = [
        (&[], "give at least one of the person's identifiers"),
        (
            &["--value", "customer.first_name=Secret-Emilie"],
            "does not tokenize this field",
        ),
        (
            &["--value", "customer.middle_name=Secret-Emilie"],
            "the policy has no field `customer.middle_name`",
        ),
        (&["--phone", "Secret-Emilie"], "empty once normalized"),
        (
            &[
                "--email",
                "Secret-Emilie@x.fr",
                "--ticket",
                "ticket with spaces",
            ],
            "--ticket must be a short reference",
        ),
        (&["--email", "-", "--phone", "-"], "fewer lines"),
    ];
    for (args, expected) in cases {
        let mut args = args.to_vec();
        if !args.contains(&"--ticket") {
            args.extend(["--ticket", "DSR-1"]);
        }
        let message = subject(&s, &args, Some(b"Secret-Emilie@x.fr\n")).fails();
        assert!(message.contains(expected), "{args:?}: {message}");
        assert!(!message.contains("Secret-Emilie"), "{args:?}: {message}");
    }
    assert!(
        !entries(&s).iter().any(|e| e["action"] == "subject"),
        "a refused request is not recorded"
    );
}

#[test]
fn subject_scan_finds_a_known_persons_records_in_the_cloud_topic_across_two_versions() {
    let s = Scratch::with_tenants(&["brand-a"]);
    let alice = ("alice@example.com", "6280 0012 3456 7890");
    let bob = ("bob@example.com", "6280 0099 8877 6655");
    let mut lines = pseudonymize(
        &s,
        POLICY,
        &[
            event("e-1", alice.0, alice.1),
            event("e-2", bob.0, bob.1),
            // The same person typed differently: the same tokens.
            event("e-3", " ALICE@example.com ", "6280001234567890"),
        ],
    );
    s.keys(&["rotate", "--tenant", "brand-a"]).ok();
    lines.extend(pseudonymize(
        &s,
        POLICY,
        &[event("e-4", bob.0, bob.1), event("e-5", alice.0, alice.1)],
    ));
    lines.push("not json, not searched".into());

    let cloud = &testkit::shared_brokers().cloud;
    let topic = cloud.random_topic("redemptions", 2);
    cloud.produce(&topic, lines.iter().map(String::as_str));
    let bootstrap = cloud.bootstrap();
    let properties = crate::harness::scan_properties(cloud);
    let mut args = vec![
        "--email",
        alice.0,
        "--loyalty-card",
        alice.1,
        "--ticket",
        "DSR-7",
        "--json",
        "--scan-brokers",
        &bootstrap,
        "--scan-topic",
        &topic,
    ];
    for property in &properties {
        args.extend(["--scan-property", property]);
    }
    let started = Instant::now();
    let answer: Value = serde_json::from_str(&subject(&s, &args, None).ok()).unwrap();
    let scan = &answer["scan"];
    assert_eq!(scan["records_read"], 6, "{answer:#}");
    assert_eq!(scan["not_json"], 1);
    let mut found: Vec<(String, Vec<(String, u64)>)> = scan["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let mut fields: Vec<(String, u64)> = m["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    (
                        f["path"].as_str().unwrap().to_string(),
                        f["version"].as_u64().unwrap(),
                    )
                })
                .collect();
            fields.sort();
            (m["event_id"].as_str().unwrap().to_string(), fields)
        })
        .collect();
    found.sort();
    let fields = |v: u64| {
        vec![
            ("customer.email".to_string(), v),
            ("customer.loyalty_card".to_string(), v),
        ]
    };
    assert_eq!(
        found,
        [
            ("e-1".to_string(), fields(1)),
            ("e-3".to_string(), fields(1)),
            ("e-5".to_string(), fields(2)),
        ]
    );
    let request = entries(&s).pop().unwrap();
    assert_eq!(request["action"], "subject");
    assert_eq!(
        request["details"],
        format!("ticket=DSR-7 fields=customer.email,customer.loyalty_card versions=1,2 scan_topic={topic} scanned=6 matches=3")
    );
    eprintln!("the scan took {:?}", started.elapsed());
}

/// The `customer.birth_date` values of pseudonymized lines.
fn sealed_birth_dates(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            record["customer"]["birth_date"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// `reidentify --field F --reason R --ticket T` over `stdin` with the encrypt policy.
fn reidentify(s: &Scratch, field: &str, reason: &str, stdin: &str) -> Run {
    s.run_with_stdin(
        &[
            "reidentify",
            "--policy",
            s.path("encrypt.policy.toml").to_str().unwrap(),
            "--keyring",
            s.keyring.to_str().unwrap(),
            "--kek-file",
            s.kek.to_str().unwrap(),
            "--tenant",
            "brand-a",
            "--field",
            field,
            "--reason",
            reason,
            "--ticket",
            "INC-7",
        ],
        Some(stdin.as_bytes()),
    )
}

#[test]
fn reidentify_decrypts_live_versions_only_after_recording_why() {
    let s = Scratch::with_tenants(&["brand-a"]);
    let policy = s.path("encrypt.policy.toml");
    std::fs::write(&policy, ENCRYPT_POLICY).unwrap();
    let person = |id: &str, birth: &str| json!({"event_id": id, "tenant": "brand-a", "customer": {"email": "a@x.fr", "birth_date": birth}});
    let mut sealed = sealed_birth_dates(&pseudonymize(
        &s,
        policy.to_str().unwrap(),
        &[person("e-1", "1987-04-12"), person("e-2", "1990-01-31")],
    ));
    s.keys(&["rotate", "--tenant", "brand-a"]).ok();
    sealed.extend(sealed_birth_dates(&pseudonymize(
        &s,
        policy.to_str().unwrap(),
        &[person("e-3", "2001-12-24")],
    )));
    assert!(sealed[0].starts_with("e1.") && sealed[2].starts_with("e2."));

    // v1 is retired and still decrypts.
    let plain = reidentify(
        &s,
        "customer.birth_date",
        "fraud-investigation",
        &format!("{}\n", sealed.join("\n")),
    )
    .ok();
    assert_eq!(plain, "1987-04-12\n1990-01-31\n2001-12-24\n");
    let entry = entries(&s).pop().unwrap();
    assert_eq!(entry["action"], "reidentify");
    assert_eq!(
        entry["details"],
        "ticket=INC-7 reason=fraud-investigation field=customer.birth_date domain=birth versions=1,2 values=3"
    );
    let log = std::fs::read_to_string(s.audit_log()).unwrap();
    // The whole value: four digits alone turn up by chance in the log's hashes and signatures.
    assert!(!log.contains("1987-04-12") && !log.contains(&sealed[0]));

    // Refusals print nothing, record nothing and never echo the value.
    let recorded = entries(&s).len();
    // One character of the nonce changed: the GCM tag no longer matches.
    let mut altered = sealed[2].clone().into_bytes();
    altered[8] = if altered[8] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let refusals = [
        (
            "customer.email",
            "fraud-investigation",
            sealed[2].clone(),
            "is tokenized",
        ),
        (
            "customer.birth_date",
            "",
            sealed[2].clone(),
            "--reason must be",
        ),
        (
            "customer.birth_date",
            "fraud investigation",
            sealed[2].clone(),
            "--reason must be",
        ),
        (
            "customer.birth_date",
            "audit",
            format!("{}\nSecret-1987-04-12\n", sealed[2]),
            "line 2 is not an encrypted value",
        ),
        (
            "customer.birth_date",
            "audit",
            format!("{altered}\n"),
            "line 1 does not decrypt with v2 of tenant brand-a",
        ),
    ];
    for (field, reason, input, expected) in refusals {
        let run = reidentify(&s, field, reason, &input);
        let message = run.fails();
        assert!(message.contains(expected), "{expected}: {message}");
        assert!(!message.contains("Secret-1987") && !message.contains(&altered));
        assert_eq!(run.stdout(), "", "{expected}: nothing printed");
    }
    assert_eq!(entries(&s).len(), recorded);

    // Crypto-shredding: v1 destroyed, its ciphertexts are gone for good; v2's still decrypt.
    s.keys(&["destroy", "--tenant", "brand-a", "--version", "1"])
        .ok();
    let run = reidentify(
        &s,
        "customer.birth_date",
        "audit",
        &format!("{}\n{}\n", sealed[2], sealed[0]),
    );
    let message = run.fails();
    assert!(
        message.contains("line 2: v1 of tenant brand-a was destroyed on ")
            && message.contains("(crypto-shredding): its ciphertexts can no longer be decrypted"),
        "{message}"
    );
    assert_eq!(run.stdout(), "");
    assert_eq!(
        reidentify(&s, "customer.birth_date", "audit", &sealed[2]).ok(),
        "2001-12-24\n"
    );

    // An audit trail that does not verify takes no new entry, so nothing is decrypted.
    let log = std::fs::read_to_string(s.audit_log()).unwrap();
    std::fs::write(
        s.audit_log(),
        log.replacen("test-officer", "someone-else", 1),
    )
    .unwrap();
    let run = reidentify(&s, "customer.birth_date", "audit", &sealed[2]);
    assert!(run.fails().contains("does not verify"));
    assert_eq!(run.stdout(), "");
}

const HOSTILE_ACTOR: &str = "<script>alert('pwned')</script> & \"x\" | **y**";

/// Two tenants, rotations (one by a hostile actor name), a destroy, a subject request and
/// a lookup on the trail.
fn scratch_with_operations() -> Scratch {
    let s = Scratch::with_tenants(&["brand-a", "brand-b"]);
    s.keys(&["rotate", "--tenant", "brand-a"]).ok();
    s.keys(&["rotate", "--tenant", "brand-a", "--actor", HOSTILE_ACTOR])
        .ok();
    s.keys(&["destroy", "--tenant", "brand-a", "--version", "1"])
        .ok();
    subject(
        &s,
        &["--email", "alice@example.com", "--ticket", "DSR-42"],
        None,
    )
    .ok();
    lookup(&s, "phone", "digits", "+33612345678");
    s
}

/// The fingerprints of brand-a's versions, from `keys list`.
fn fingerprints(s: &Scratch) -> Vec<String> {
    let list: Value =
        serde_json::from_str(&s.keys(&["list", "--tenant", "brand-a", "--json"]).ok()).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v["fingerprint"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_report_has_the_versions_table_and_escapes_what_operators_typed() {
    let s = scratch_with_operations();
    let fp = fingerprints(&s);
    let md_path = s.path("report.md");
    s.audit_report("md", &md_path).ok();
    let md = std::fs::read_to_string(&md_path).unwrap();
    assert!(md.contains("> **OK** Verified: 7 entries"), "{md}");
    assert!(md.contains("## Tenant brand-a") && md.contains("## Tenant brand-b"));
    assert!(
        md.contains("| Version | State | Fingerprint | Created | Activated | Retired | Destroyed | Events by ingest | Events by batch runs | Events tokenized |"),
        "{md}"
    );
    // Destroyed in italics, unlike the bold of states that call for attention.
    for (version, state) in [(1, "*destroyed*"), (2, "retired"), (3, "**active**")] {
        let row = format!("| {version} | {state} | {} |", fp[version - 1]);
        assert!(md.contains(&row), "{row} in {md}");
    }
    assert!(
        md.contains("| subject | DSR-42 | customer.email | 2, 3 |"),
        "{md}"
    );
    assert!(!md.contains("<script"), "{md}");
    assert!(
        md.contains("&lt;script&gt;alert('pwned')&lt;/script&gt; &amp; \"x\" \\| \\*\\*y\\*\\*")
    );

    let html_path = s.path("report.html");
    s.audit_report("html", &html_path).ok();
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains(
        "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; &amp; &quot;x&quot; | **y**"
    ));
    for external in [
        "<script", "<link", "<img", "src=", "href=", "url(", "@import",
    ] {
        assert!(!html.contains(external), "{external} in the page");
    }
    assert!(html.contains("class=\"status ok\""));
    assert!(html.contains(&format!("<td>{}</td>", fp[2])));
}

#[test]
fn a_tampered_log_is_still_reported_with_the_failure_first() {
    let s = scratch_with_operations();
    let log = std::fs::read_to_string(s.audit_log()).unwrap();
    std::fs::write(s.audit_log(), log.replacen("DSR-42", "DSR-43", 1)).unwrap();
    let md_path = s.path("report.md");
    let message = s.audit_report("md", &md_path).fails();
    assert!(message.contains("does not verify"), "{message}");
    let md = std::fs::read_to_string(&md_path).unwrap();
    let failure = md
        .find("> **FAILED** Verification FAILED: ")
        .expect("the failure");
    assert!(failure < md.find("## Tenant").unwrap());
    assert!(md.contains("line 6 is the first bad entry"), "{md}");
    assert!(
        md.contains(
            "The first bad entry is marked FAILS VERIFICATION in every table it appears in"
        ),
        "{md}"
    );
    // The subject request of DSR-42 (now 43) is the sixth entry: marked in its own table
    // and in every entry's.
    assert_eq!(
        md.matches("| **✗ FAILS VERIFICATION (first bad entry)** | ")
            .count(),
        2,
        "{md}"
    );
    assert!(md.contains("| subject | DSR-43 | customer.email |"), "{md}");
    assert!(md.contains("DSR-43"), "entries still shown");
    let html_path = s.path("report.html");
    s.audit_report("html", &html_path).fails();
    let html = std::fs::read_to_string(&html_path).unwrap();
    let failure = html.find("class=\"status failed\"").expect("the failure");
    assert!(failure < html.find("<section>").unwrap());
}

/// Headless Chromium's screenshot of `page`, decoded to 8-bit RGB(A): (pixels, channels).
fn screenshot(page: &Path, png: &Path) -> (Vec<u8>, usize) {
    let profile = tempfile::tempdir().unwrap();
    let mut chromium = Command::new("chromium")
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,2000",
            &format!("file://{}", page.display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("`chromium` is on PATH (scripts/install-test-deps.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = chromium.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = chromium.kill();
            panic!("chromium did not take the screenshot within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "chromium failed: {status}");
    let mut decoder = png::Decoder::new(BufReader::new(std::fs::File::open(png).unwrap()));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (1280, 2000));
    pixels.truncate(frame.buffer_size());
    (pixels, frame.color_type.samples())
}

/// Share of pixels that are not white, distinct colours, and share of strong red pixels.
fn measure(pixels: &[u8], channels: usize) -> (f64, usize, f64) {
    let total = pixels.len() / channels;
    let mut colours = std::collections::HashSet::new();
    let (mut inked, mut red) = (0usize, 0usize);
    for pixel in pixels.chunks_exact(channels) {
        let (r, g, b) = (pixel[0], pixel[1], pixel[2]);
        colours.insert((r, g, b));
        if r < 235 || g < 235 || b < 235 {
            inked += 1;
        }
        if r > 170 && g < 80 && b < 80 {
            red += 1;
        }
    }
    (
        inked as f64 / total as f64,
        colours.len(),
        red as f64 / total as f64,
    )
}

#[test]
fn the_html_report_renders_in_headless_chromium() {
    let s = scratch_with_operations();
    let page = s.path("report.html");
    s.audit_report("html", &page).ok();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory holds tmp/")
        .to_path_buf();
    let png_path: PathBuf = target.join("audit-report.png");
    let (pixels, channels) = screenshot(&page, &png_path);
    let (inked, colours, red) = measure(&pixels, channels);
    println!(
        "screenshot of the HTML audit report: {} ({:.1}% drawn, {colours} colours)",
        png_path.display(),
        inked * 100.0
    );
    assert!(
        inked > 0.05,
        "only {:.1}% of the page is drawn",
        inked * 100.0
    );
    assert!(colours > 16, "only {colours} colours");
    assert!(red < 0.002, "a verified log shows no red banner ({red})");

    // A failed verification is drawn in red at the top.
    let log = std::fs::read_to_string(s.audit_log()).unwrap();
    std::fs::write(s.audit_log(), log.replacen("DSR-42", "DSR-43", 1)).unwrap();
    let failed_page = s.path("failed.html");
    s.audit_report("html", &failed_page).fails();
    let (pixels, channels) = screenshot(&failed_page, &s.path("failed.png"));
    let banner = &pixels[..channels * 1280 * 300];
    let (_, _, red) = measure(banner, channels);
    assert!(red > 0.05, "the failure banner is red ({red})");
}

/// `lookup` and `subject` need `--ticket` (recorded with the request); a config file with
/// `[keys] require_ticket = false`, given with `--config` or `PSEUDOPIPE_CONFIG`, makes it
/// optional for them; `reidentify` needs one whatever the config says.
#[test]
fn data_subject_commands_need_a_ticket_unless_the_config_relaxes_it() {
    let s = Scratch::with_tenants(&["brand-a"]);
    let lookup_args = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "lookup",
            "--keyring",
            s.keyring.to_str().unwrap(),
            "--kek-file",
            s.kek.to_str().unwrap(),
            "--tenant",
            "brand-a",
            "--domain",
            "email",
            "--normalizer",
            "email",
            "alice@example.com",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let run = |args: &[String]| s.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let before = entries(&s).len();

    let message = run(&lookup_args(&[])).fails();
    assert!(
        message.contains("--ticket is required") && message.contains("require_ticket = false"),
        "{message}"
    );
    let message = subject(&s, &["--email", "alice@example.com"], None).fails();
    assert!(message.contains("--ticket is required"), "{message}");
    let reidentify = s.run(&[
        "reidentify",
        "--policy",
        POLICY,
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        s.kek.to_str().unwrap(),
        "--tenant",
        "brand-a",
        "--field",
        "customer.birth_date",
        "--reason",
        "fraud",
        "e1.AAAA",
    ]);
    assert_eq!(reidentify.output.status.code(), Some(2), "a usage error");
    assert!(
        reidentify.stderr().contains("--ticket"),
        "{}",
        reidentify.stderr()
    );
    assert_eq!(
        entries(&s).len(),
        before,
        "refused requests are not recorded"
    );

    // With a ticket, the lookup's entry names it.
    run(&lookup_args(&["--ticket", "DSR-42"])).ok();
    let last = entries(&s).pop().unwrap();
    assert_eq!(last["action"], "lookup");
    assert_eq!(
        last["details"],
        "ticket=DSR-42 domain=email normalizer=email"
    );

    let config = |require: bool| {
        let path = testkit::StageConfig::new()
            .keys(&s.keyring, &s.kek)
            .set("keys", "require_ticket", require)
            .write(&s.path(&format!("pseudopipe-{require}.toml")));
        path.to_str().unwrap().to_string()
    };
    let strict = config(true);
    assert!(run(&lookup_args(&["--config", &strict]))
        .fails()
        .contains("--ticket is required"));
    let relaxed = config(false);
    run(&lookup_args(&["--config", &relaxed])).ok();
    assert_eq!(
        entries(&s).pop().unwrap()["details"],
        "domain=email normalizer=email"
    );
    let mut command = s.command(&[
        "subject",
        "--policy",
        POLICY,
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        s.kek.to_str().unwrap(),
        "--tenant",
        "brand-a",
        "--email",
        "alice@example.com",
    ]);
    command.env("PSEUDOPIPE_CONFIG", &relaxed);
    Scratch::finish(command, None).ok();
    let last = entries(&s).pop().unwrap();
    assert_eq!(last["action"], "subject");
    assert!(!last["details"].as_str().unwrap().contains("ticket="));
    s.audit_verify().ok();
}

/// Runs the report page in headless Chromium inside a probe page and returns, as the
/// browser laid it out, every table: its section (`h2`), heading (`h3`), how many pixels
/// it overflows the page's text column, columns, and per row its class, outline colour
/// and cells (text, class, text colour, background, and on
/// how many lines the text is drawn).
fn rendered_tables(page: &Path) -> Vec<Value> {
    let dir = page.parent().unwrap();
    let probe = dir.join("probe.html");
    // The report forbids scripts (its content security policy); the probe, its parent
    // page, reads the report's DOM from outside.
    std::fs::write(
        &probe,
        format!(
            r#"<!DOCTYPE html><html><body><pre id="out">pending</pre>
<iframe id="report" src="{}" style="width:1280px;height:2000px"></iframe>
<script>
document.getElementById('report').addEventListener('load', () => {{
  const doc = document.getElementById('report').contentDocument;
  const style = (e) => doc.defaultView.getComputedStyle(e);
  const tables = [...doc.querySelectorAll('table')].map(table => {{
    let h3 = table.previousElementSibling;
    while (h3 && h3.tagName !== 'H3') h3 = h3.previousElementSibling;
    const body = doc.body.getBoundingClientRect();
    const content = body.right - parseFloat(style(doc.body).paddingRight);
    return {{
      section: table.closest('section').querySelector('h2').textContent,
      overflow: Math.round(table.getBoundingClientRect().right - content),
      heading: h3 ? h3.textContent : '',
      columns: [...table.querySelectorAll('th')].map(th => th.textContent),
      rows: [...table.querySelectorAll('tbody tr')].map(tr => ({{
        class: tr.className,
        outline: style(tr).outlineColor + ' ' + style(tr).outlineStyle,
        cells: [...tr.querySelectorAll('td')].map(td => {{
          const range = doc.createRange();
          range.selectNodeContents(td);
          const lines = new Set([...range.getClientRects()].map(r => Math.round(r.top))).size;
          return {{ text: td.textContent, class: td.className, lines,
                    color: style(td).color, background: style(td).backgroundColor }};
        }}),
      }})),
    }};
  }});
  document.getElementById('out').textContent = JSON.stringify(tables);
}});
</script></body></html>"#,
            page.file_name().unwrap().to_str().unwrap()
        ),
    )
    .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let mut chromium = Command::new("chromium")
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--allow-file-access-from-files",
            "--virtual-time-budget=20000",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            &format!("file://{}", probe.display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("`chromium` is on PATH (scripts/install-test-deps.sh installs it)");
    let mut dom = String::new();
    std::io::Read::read_to_string(chromium.stdout.as_mut().unwrap(), &mut dom).unwrap();
    assert!(chromium.wait().unwrap().success(), "chromium failed");
    let json = dom
        .split_once("<pre id=\"out\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(json, _)| json)
        .expect("the probe's output");
    let json = json
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&");
    serde_json::from_str(&json).unwrap_or_else(|error| panic!("{error}: {json}"))
}

/// The rendered table `heading` of section `section`.
fn table<'t>(tables: &'t [Value], section: &str, heading: &str) -> &'t Value {
    tables
        .iter()
        .find(|t| t["section"] == section && t["heading"] == heading)
        .unwrap_or_else(|| panic!("no table {heading} in {section}"))
}

/// A rendered row as `column → cell`.
fn cells<'t>(table: &'t Value, row: &'t Value) -> std::collections::BTreeMap<&'t str, &'t Value> {
    table["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .zip(row["cells"].as_array().unwrap())
        .collect()
}

/// `pseudonymize` of `counts` (tenant, events) plus `malformed` bad lines, from a file to a
/// file: per (tenant, version) the events it wrote, read from its output (each line's
/// tenant and the version of its e-mail token), which is what the run reported.
fn batch_run(
    s: &Scratch,
    name: &str,
    counts: &[(&str, usize)],
    malformed: usize,
) -> Vec<((String, u64), u64)> {
    let mut input = String::new();
    for (tenant, n) in counts {
        for i in 0..*n {
            let mut e = event(
                &format!("{name}-{tenant}-{i}"),
                &format!("p{i}@example.com"),
                "6280 0012 3456 7890",
            );
            e["tenant"] = (*tenant).into();
            input.push_str(&format!("{e}\n"));
        }
    }
    input.push_str(&"{not json\n".repeat(malformed));
    let (path, output) = (
        s.path(&format!("{name}.jsonl")),
        s.path(&format!("{name}.out.jsonl")),
    );
    std::fs::write(&path, input).unwrap();
    let run = s.run(&[
        "pseudonymize",
        "--policy",
        POLICY,
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        s.kek.to_str().unwrap(),
        "--input",
        path.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--quarantine",
        s.path(&format!("{name}.quarantine.jsonl"))
            .to_str()
            .unwrap(),
    ]);
    run.ok();
    let reported = run
        .stderr()
        .lines()
        .find_map(|line| line.strip_prefix("events per tenant and key version: "))
        .expect("the run reports its events per tenant and version")
        .to_string();
    let mut written = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(&output).unwrap().lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let token = record["customer"]["email"].as_str().unwrap();
        let version: u64 = token[1..token.find('.').unwrap()].parse().unwrap();
        *written
            .entry((record["tenant"].as_str().unwrap().to_string(), version))
            .or_insert(0) += 1;
    }
    let written: Vec<((String, u64), u64)> = written.into_iter().collect();
    let from_output: Vec<String> = written
        .iter()
        .map(|((tenant, version), n)| format!("{tenant} v{version}: {n}"))
        .collect();
    assert_eq!(reported, from_output.join(", "), "what {name} reported");
    written
}

/// Several batch runs over two tenants, a rotation between them, a failed run and a
/// crypto-shredded version: the report, as headless Chromium draws it, shows per tenant
/// and version the events the runs wrote (counted from their outputs), each run's own
/// counts in the tenant's runs table, dates on one line and the destroyed version in a
/// style of its own. Then one run's entry is altered: the report marks that row, where it
/// stands, as the first bad entry.
#[test]
fn the_reports_counts_per_tenant_and_version_equal_the_batch_runs() {
    let s = Scratch::with_tenants(&["brand-a", "brand-b"]);
    let mut runs = vec![batch_run(
        &s,
        "run1",
        &[("brand-a", 30), ("brand-b", 20)],
        2,
    )];
    s.keys(&["rotate", "--tenant", "brand-a"]).ok();
    runs.push(batch_run(
        &s,
        "run2",
        &[("brand-b", 10), ("brand-a", 15)],
        0,
    ));
    runs.push(batch_run(&s, "run3", &[("brand-a", 5)], 1));
    // A failed run (full disk) counts nothing: its output never took its name.
    std::fs::write(
        s.path("big.jsonl"),
        format!("{}\n", event("x", "x@example.com", "1")).repeat(3000),
    )
    .unwrap();
    s.run(&[
        "pseudonymize",
        "--policy",
        POLICY,
        "--keyring",
        s.keyring.to_str().unwrap(),
        "--kek-file",
        s.kek.to_str().unwrap(),
        "--input",
        s.path("big.jsonl").to_str().unwrap(),
        "--output",
        "/dev/full",
    ])
    .fails();
    s.keys(&["destroy", "--tenant", "brand-a", "--version", "1"])
        .ok();
    let mut expected: std::collections::BTreeMap<(String, u64), u64> = Default::default();
    for ((tenant, version), n) in runs.iter().flatten() {
        *expected.entry((tenant.clone(), *version)).or_default() += n;
    }
    assert_eq!(
        expected,
        [
            (("brand-a", 1), 30),
            (("brand-a", 2), 20),
            (("brand-b", 1), 30)
        ]
        .map(|((t, v), n)| ((t.to_string(), v), n))
        .into(),
        "the runs wrote what they were given"
    );

    let page = s.path("report.html");
    s.audit_report("html", &page).ok();
    let tables = rendered_tables(&page);
    for tenant in ["brand-a", "brand-b"] {
        let section = format!("Tenant {tenant}");
        let versions = table(&tables, &section, "Key versions");
        let mut shown = std::collections::BTreeMap::new();
        for row in versions["rows"].as_array().unwrap() {
            let row = cells(versions, row);
            let version: u64 = row["Version"]["text"].as_str().unwrap().parse().unwrap();
            assert_eq!(row["Events by ingest"]["text"], "—", "no ingest ran");
            assert_eq!(
                row["Events by batch runs"]["text"],
                row["Events tokenized"]["text"]
            );
            if let Some(n) = expected.get(&(tenant.to_string(), version)) {
                assert_eq!(
                    row["Events tokenized"]["text"],
                    n.to_string(),
                    "{tenant} v{version}"
                );
                shown.insert(version, *n);
            } else {
                assert_eq!(row["Events tokenized"]["text"], "—", "{tenant} v{version}");
            }
        }
        assert_eq!(
            shown.len(),
            expected.keys().filter(|(t, _)| t == tenant).count(),
            "every version that tokenized is in {tenant}'s table"
        );
        // Each run's end entry for this tenant, with what that run wrote of it.
        let table_runs = table(&tables, &section, "Ingest runs and batch runs");
        let ends: Vec<String> = table_runs["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| cells(table_runs, row))
            .filter(|row| row["Phase"]["text"] == "end")
            .map(|row| {
                format!(
                    "{} {}",
                    row["Input"]["text"].as_str().unwrap(),
                    row["Events per version"]["text"].as_str().unwrap()
                )
            })
            .collect();
        let per_run: Vec<String> = runs
            .iter()
            .enumerate()
            .flat_map(|(index, run)| {
                run.iter()
                    .filter(|((t, _), _)| t == tenant)
                    .map(move |((_, v), n)| format!("run{}.jsonl v{v}: {n}", index + 1))
            })
            .collect();
        assert_eq!(ends, per_run, "{tenant}'s runs");
    }

    // Dates and times on one line, wherever they stand.
    let mut dates = 0;
    for t in &tables {
        for row in t["rows"].as_array().unwrap() {
            for cell in row["cells"].as_array().unwrap() {
                let text = cell["text"].as_str().unwrap();
                if text.len() == 20 && text.as_bytes()[4] == b'-' && text.as_bytes()[10] == b'T' {
                    dates += 1;
                    assert_eq!(
                        cell["lines"], 1,
                        "{text} in {} is drawn on {} lines",
                        t["heading"], cell["lines"]
                    );
                }
            }
        }
    }
    assert!(dates > 30, "only {dates} dates");
    for t in &tables {
        assert!(
            t["overflow"].as_i64().unwrap() <= 0,
            "{} of {} is {} px wider than the page",
            t["heading"],
            t["section"],
            t["overflow"]
        );
    }

    // The destroyed version: its own style, not the red of errors.
    let versions = table(&tables, "Tenant brand-a", "Key versions");
    let v1 = cells(versions, &versions["rows"][0]);
    assert_eq!(v1["State"]["text"], "destroyed");
    let destroyed = (
        v1["State"]["color"].clone(),
        v1["State"]["background"].clone(),
    );

    // Alter the count of brand-a's end entry of run 2: the report marks it in place.
    let log = std::fs::read_to_string(s.audit_log()).unwrap();
    let altered: Value = serde_json::from_str(
        log.lines()
            .find(|l| {
                l.contains("\"tenant\":\"brand-a\"") && l.contains("input=run2.jsonl events=v2:15")
            })
            .expect("brand-a's entry of run 2"),
    )
    .unwrap();
    std::fs::write(
        s.audit_log(),
        log.replacen(
            "input=run2.jsonl events=v2:15",
            "input=run2.jsonl events=v2:16",
            1,
        ),
    )
    .unwrap();
    let failed = s.path("failed.html");
    s.audit_report("html", &failed).fails();
    let tables = rendered_tables(&failed);
    for heading in ["Ingest runs and batch runs", "Every entry"] {
        let t = table(&tables, "Tenant brand-a", heading);
        assert_eq!(t["columns"][0], "Verification");
        let marks: Vec<(u64, String, String)> = t["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                let c = cells(t, row);
                (
                    c["Seq"]["text"].as_str().unwrap().parse().unwrap(),
                    c["Verification"]["text"].as_str().unwrap().to_string(),
                    row["class"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let seq = altered["seq"].as_u64().unwrap();
        for (at, text, class) in &marks {
            let (want_text, want_class) = match at.cmp(&seq) {
                std::cmp::Ordering::Less => ("chain intact", ""),
                std::cmp::Ordering::Equal => ("✗ FAILS VERIFICATION (first bad entry)", "tampered"),
                std::cmp::Ordering::Greater => ("unverified (after the bad entry)", "unverified"),
            };
            assert_eq!(
                (text.as_str(), class.as_str()),
                (want_text, want_class),
                "seq {at} in {heading}"
            );
        }
        assert!(
            marks.iter().any(|(at, ..)| *at == seq),
            "the altered entry is in {heading}"
        );
        let row = t["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["class"] == "tampered")
            .unwrap();
        assert_eq!(row["outline"], "rgb(192, 38, 45) solid", "drawn in red");
        let bad = &row["cells"][0];
        assert_ne!(
            (bad["color"].clone(), bad["background"].clone()),
            destroyed,
            "destroyed is not drawn as an error"
        );
    }
    // The altered count shows (the report hides nothing it read), marked as unverified in
    // red, as are counts from entries after it; those before it stand as they are.
    for (section, row, want) in [
        ("Tenant brand-a", 0, "30"),
        ("Tenant brand-a", 1, "21 (unverified)"),
        ("Tenant brand-b", 0, "30 (unverified)"),
    ] {
        let versions = table(&tables, section, "Key versions");
        let cell = cells(versions, &versions["rows"][row])["Events tokenized"];
        assert_eq!(cell["text"], want, "{section}");
        assert_eq!(
            cell["class"] == "bad",
            want.ends_with("(unverified)"),
            "{section}"
        );
    }
}
