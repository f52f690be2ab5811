//! The SSRF guard of outbound webhooks (`api::webhooks::ssrf`): a matrix of
//! URLs against the egress policy, the connect-time resolver, and a loopback
//! "canary" listener that must see no connection unless the operator allows
//! loopback. Run with `--nocapture` to see the tables.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use api::webhooks::ssrf::{
    AddressClass, EgressPolicy, EgressPolicyError, GuardedResolver, IpNetwork, Lookup,
    LookupFuture, NetworkError, SsrfError, SystemLookup, classify, client, client_builder,
};
use reqwest::Url;
use reqwest::dns::Resolve as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use AddressClass::*;

const TIMEOUT: Duration = Duration::from_secs(5);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn policy(allow_http: bool, entries: &[&str]) -> EgressPolicy {
    EgressPolicy::new(allow_http, entries).expect("test policy")
}

/// A fake DNS: fixed answers for `*.example` and `*.internal` names, a name
/// that rebinds to loopback after its first answer, and the system resolver
/// for anything else (`localhost`).
#[derive(Clone, Default)]
struct FakeDns {
    rebind_calls: Arc<AtomicUsize>,
}

impl Lookup for FakeDns {
    fn lookup(&self, host: &str) -> LookupFuture {
        let answer = match host {
            "public.example" => vec![ip("93.184.216.34"), ip("2606:2800:220:1::1946")],
            "internal.example" => vec![ip("10.1.2.3")],
            "loopback.example" => vec![ip("127.0.0.1")],
            "mapped.example" => vec![ip("::ffff:169.254.169.254")],
            "mixed.example" => vec![ip("93.184.216.34"), ip("127.0.0.1")],
            "empty.example" => vec![],
            "hooks.internal" => vec![ip("10.0.0.5")],
            "other.internal" => vec![ip("10.0.0.6")],
            "rebind.example" => {
                if self.rebind_calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    vec![ip("93.184.216.34")]
                } else {
                    vec![ip("127.0.0.1")]
                }
            }
            name if name.ends_with(".example") || name.ends_with(".internal") => {
                return Box::pin(std::future::ready(Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no such host",
                ))));
            }
            _ => return SystemLookup.lookup(host),
        };
        Box::pin(std::future::ready(Ok(answer)))
    }
}

#[derive(Clone, Copy)]
enum Check {
    /// `check_url`: no DNS.
    Url,
    /// `check_url_resolving_with` the fake DNS (system resolver for
    /// `localhost`).
    Resolving,
}

type Expected = Result<(), SsrfError>;

fn blocked(class: AddressClass) -> Expected {
    Err(SsrfError::BlockedAddress(class))
}

fn resolves_to(class: AddressClass) -> Expected {
    Err(SsrfError::BlockedResolvedAddress(class))
}

fn short(e: &Expected) -> String {
    match e {
        Ok(()) => "allowed".into(),
        Err(SsrfError::BlockedAddress(c)) => format!("blocked: {c:?}"),
        Err(SsrfError::BlockedResolvedAddress(c)) => format!("resolves to {c:?}"),
        Err(SsrfError::InvalidUrl(_)) => "InvalidUrl".into(),
        Err(other) => format!("{other:?}"),
    }
}

fn print_table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let cells: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("| {} |", cells.join(" | "));
    };
    println!("\n{title}");
    line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
    for row in rows {
        line(row);
    }
}

#[tokio::test]
async fn url_matrix() {
    let strict = EgressPolicy::default();
    let http_only = policy(true, &[]);
    let loopback = policy(true, &["127.0.0.0/8"]);
    let named = policy(false, &["HOOKS.Internal", "metadata"]);
    let policies: [(&str, &EgressPolicy); 4] = [
        ("default", &strict),
        ("http, nothing allowed", &http_only),
        ("http + 127.0.0.0/8", &loopback),
        ("hooks.internal, metadata", &named),
    ];
    use Check::{Resolving as R, Url as U};
    let ok: Expected = Ok(());
    #[rustfmt::skip]
    let cases: Vec<(usize, Check, &str, Expected)> = vec![
        // IPv4 ranges.
        (0, U, "https://127.0.0.1/hook", blocked(Loopback)),
        (0, U, "https://127.255.255.254/", blocked(Loopback)),
        (0, U, "https://0.0.0.0/", blocked(Unspecified)),
        (0, U, "https://0/", blocked(Unspecified)),
        (0, U, "https://10.0.0.1/", blocked(Private)),
        (0, U, "https://172.16.0.1/", blocked(Private)),
        (0, U, "https://172.31.255.255/", blocked(Private)),
        (0, U, "https://192.168.1.1/", blocked(Private)),
        (0, U, "https://169.254.169.254/latest/meta-data/", blocked(CloudMetadata)),
        (0, U, "https://169.254.0.1/", blocked(LinkLocal)),
        (0, U, "https://100.64.0.1/", blocked(SharedAddressSpace)),
        (0, U, "https://100.100.100.200/", blocked(CloudMetadata)),
        (0, U, "https://224.0.0.1/", blocked(Multicast)),
        (0, U, "https://239.255.255.250/", blocked(Multicast)),
        (0, U, "https://255.255.255.255/", blocked(Broadcast)),
        (0, U, "https://240.0.0.1/", blocked(Reserved)),
        (0, U, "https://192.0.0.8/", blocked(Reserved)),
        (0, U, "https://192.0.2.1/", blocked(Documentation)),
        (0, U, "https://198.18.0.1/", blocked(Benchmarking)),
        (0, U, "https://198.19.255.1/", blocked(Benchmarking)),
        (0, U, "https://198.51.100.7/", blocked(Documentation)),
        (0, U, "https://203.0.113.9/", blocked(Documentation)),
        // Other spellings of IPv4 addresses (WHATWG URL parsing).
        (0, U, "https://2130706433/", blocked(Loopback)),
        (0, U, "https://0177.0.0.1/", blocked(Loopback)),
        (0, U, "https://0x7f000001/", blocked(Loopback)),
        (0, U, "https://0x7f.1/", blocked(Loopback)),
        (0, U, "https://127.1/", blocked(Loopback)),
        (0, U, "https://0x7F.0.0.1./", blocked(Loopback)),
        (0, U, "https://0xa9fea9fe/", blocked(CloudMetadata)),
        (0, U, "https://2852039166/", blocked(CloudMetadata)),
        (0, U, "https://012.0.0.1/", blocked(Private)),
        // IPv6 and IPv4 embedded in IPv6.
        (0, U, "https://[::1]/", blocked(Loopback)),
        (0, U, "https://[0:0:0:0:0:0:0:1]/", blocked(Loopback)),
        (0, U, "https://[::]/", blocked(Unspecified)),
        (0, U, "https://[::ffff:127.0.0.1]/", blocked(Loopback)),
        (0, U, "https://[::ffff:7f00:1]/", blocked(Loopback)),
        (0, U, "https://[::ffff:169.254.169.254]/", blocked(CloudMetadata)),
        (0, U, "https://[::ffff:10.0.0.1]/", blocked(Private)),
        (0, U, "https://[::127.0.0.1]/", blocked(Loopback)),
        (0, U, "https://[::8.8.8.8]/", blocked(Reserved)),
        (0, U, "https://[64:ff9b::7f00:1]/", blocked(Loopback)),
        (0, U, "https://[64:ff9b::a9fe:a9fe]/", blocked(CloudMetadata)),
        (0, U, "https://[64:ff9b:1::a00:1]/", blocked(Reserved)),
        (0, U, "https://[2002:c0a8:101::1]/", blocked(Private)),
        (0, U, "https://[2002:7f00:1::]/", blocked(Loopback)),
        (0, U, "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", blocked(Reserved)),
        (0, U, "https://[fc00::1]/", blocked(Private)),
        (0, U, "https://[fd12:3456::1]/", blocked(Private)),
        (0, U, "https://[fd00:ec2::254]/", blocked(CloudMetadata)),
        (0, U, "https://[fe80::1]/", blocked(LinkLocal)),
        (0, U, "https://[fec0::1]/", blocked(SiteLocal)),
        (0, U, "https://[ff02::1]/", blocked(Multicast)),
        (0, U, "https://[100::1]/", blocked(Discard)),
        (0, U, "https://[2001:db8::1]/", blocked(Documentation)),
        (0, U, "https://[3fff::1]/", blocked(Documentation)),
        (0, U, "https://[4000::1]/", blocked(Reserved)),
        // Metadata names.
        (0, U, "https://metadata.google.internal/computeMetadata/v1/", Err(SsrfError::MetadataHost)),
        (0, U, "https://metadata/", Err(SsrfError::MetadataHost)),
        (0, U, "https://METADATA.Google.Internal./", Err(SsrfError::MetadataHost)),
        (0, U, "https://\u{24DC}etadata/", Err(SsrfError::MetadataHost)),
        // Scheme, credentials, shape.
        (0, U, "http://example.com/hook", Err(SsrfError::HttpsRequired)),
        (0, U, "ftp://example.com/", Err(SsrfError::HttpsRequired)),
        (0, U, "file:///etc/passwd", Err(SsrfError::HttpsRequired)),
        (1, U, "gopher://example.com/", Err(SsrfError::UnsupportedScheme)),
        (0, U, "https://user:secret@example.com/", Err(SsrfError::Credentials)),
        (0, U, "https://token@example.com/", Err(SsrfError::Credentials)),
        (0, U, "https://:secret@example.com/", Err(SsrfError::Credentials)),
        (0, U, "/relative/hook", Err(SsrfError::InvalidUrl(String::new()))),
        (0, U, "https://", Err(SsrfError::InvalidUrl(String::new()))),
        (0, U, "https://[::1/", Err(SsrfError::InvalidUrl(String::new()))),
        // Public addresses and names pass.
        (0, U, "https://example.com/hook?x=1", ok.clone()),
        (0, U, "https://93.184.216.34/", ok.clone()),
        (0, U, "https://8.8.8.8:8443/", ok.clone()),
        (0, U, "https://[2606:4700:4700::1111]/", ok.clone()),
        (0, U, "https://[::ffff:8.8.8.8]/", ok.clone()),
        (0, U, "https://[64:ff9b::808:808]/", ok.clone()),
        (0, U, "https://[2002:808:808::1]/", ok.clone()),
        (1, U, "http://example.com/", ok.clone()),
        (1, U, "http://127.0.0.1:8080/", blocked(Loopback)),
        // Names, resolved: every address is checked.
        (0, R, "https://localhost/", resolves_to(Loopback)),
        (0, R, "https://localhost./", resolves_to(Loopback)),
        (0, R, "https://loopback.example/", resolves_to(Loopback)),
        (0, R, "https://internal.example/", resolves_to(Private)),
        (0, R, "https://mapped.example/", resolves_to(CloudMetadata)),
        (0, R, "https://mixed.example/", resolves_to(Loopback)),
        (0, R, "https://public.example/", ok.clone()),
        (0, R, "https://nowhere.example/", Err(SsrfError::Unresolvable)),
        (0, R, "https://empty.example/", Err(SsrfError::Unresolvable)),
        (0, R, "https://hooks.internal/", resolves_to(Private)),
        // The operator allows loopback and plain HTTP.
        (2, U, "http://127.0.0.1:8080/", ok.clone()),
        (2, U, "http://127.0.0.2/", ok.clone()),
        (2, U, "http://2130706433/", ok.clone()),
        (2, U, "http://0x7f.1/", ok.clone()),
        (2, U, "http://[::ffff:127.0.0.1]/", ok.clone()),
        (2, R, "http://localhost/", ok.clone()),
        (2, R, "http://loopback.example/", ok.clone()),
        (2, U, "http://[::1]/", blocked(Loopback)),
        (2, U, "http://10.0.0.1/", blocked(Private)),
        (2, U, "http://169.254.169.254/", blocked(CloudMetadata)),
        (2, R, "http://mixed.example/", ok.clone()),
        (2, R, "http://internal.example/", resolves_to(Private)),
        (2, U, "http://user:pw@127.0.0.1/", Err(SsrfError::Credentials)),
        // The operator allows host names.
        (3, R, "https://hooks.internal/", ok.clone()),
        (3, R, "https://Hooks.Internal./", ok.clone()),
        (3, R, "https://other.internal/", resolves_to(Private)),
        (3, U, "https://metadata/", ok.clone()),
        (3, U, "https://metadata.google.internal/", Err(SsrfError::MetadataHost)),
        (3, U, "http://hooks.internal/", Err(SsrfError::HttpsRequired)),
    ];

    let dns = FakeDns::default();
    let mut rows = Vec::new();
    let mut failures = 0;
    for (n, (p, check, url, expected)) in cases.iter().enumerate() {
        let (policy_name, policy) = policies[*p];
        let got = match check {
            Check::Url => policy.check_url(url),
            Check::Resolving => policy.check_url_resolving_with(url, &dns).await,
        }
        .map(drop);
        // Parse errors are compared by kind; their reason is the parser's.
        let pass = match (&got, expected) {
            (Err(SsrfError::InvalidUrl(_)), Err(SsrfError::InvalidUrl(_))) => true,
            (got, expected) => got == expected,
        };
        if !pass {
            failures += 1;
        }
        rows.push(vec![
            (n + 1).to_string(),
            policy_name.to_owned(),
            match check {
                Check::Url => "check_url",
                Check::Resolving => "resolving",
            }
            .to_owned(),
            url.escape_default().to_string(),
            short(expected),
            short(&got),
            if pass { "ok" } else { "FAIL" }.to_owned(),
        ]);
    }
    print_table(
        "SSRF URL matrix",
        &["#", "policy", "check", "URL", "expected", "got", ""],
        &rows,
    );
    println!("{} cases, {failures} failed", rows.len());
    assert!(rows.len() >= 30);
    assert_eq!(failures, 0, "see the table above");
}

#[test]
fn classify_covers_the_special_ranges() {
    let cases = [
        ("127.0.0.1", Some(Loopback)),
        ("0.1.2.3", Some(Unspecified)),
        ("10.255.255.255", Some(Private)),
        ("172.15.255.255", None),
        ("172.32.0.0", None),
        ("100.63.255.255", None),
        ("100.127.255.255", Some(SharedAddressSpace)),
        ("100.128.0.0", None),
        ("169.254.170.2", Some(CloudMetadata)),
        ("168.63.129.16", Some(CloudMetadata)),
        ("192.0.0.192", Some(CloudMetadata)),
        ("192.88.99.1", Some(Reserved)),
        ("198.20.0.0", None),
        ("223.255.255.255", None),
        ("1.1.1.1", None),
        ("::ffff:1.1.1.1", None),
        ("::ffff:0.0.0.0", Some(Unspecified)),
        ("2a00:1450:4001::200e", None),
        ("2001:200::1", None),
        ("2001:1ff::1", Some(Reserved)),
        ("fdff:ffff::1", Some(Private)),
        ("febf::1", Some(LinkLocal)),
        ("ff0e::1", Some(Multicast)),
        ("5f00::1", Some(Reserved)),
        ("::2", Some(Unspecified)),
        ("::1.1.1.1", Some(Reserved)),
    ];
    for (addr, expected) in cases {
        assert_eq!(classify(ip(addr)), expected, "{addr}");
    }
}

#[test]
fn policy_entries_parse_or_fail_clearly() {
    let p = EgressPolicy::new(
        true,
        [
            "127.0.0.0/8",
            " fd00::/8 ",
            "",
            "10.1.2.3",
            "[::1]",
            "Hooks.Example.COM.",
            "127.2",
        ],
    )
    .expect("valid entries");
    assert!(p.allow_http());
    assert_eq!(p.allowed_hosts(), ["hooks.example.com"]);
    let networks: Vec<String> = p.allowed_networks().iter().map(|n| n.to_string()).collect();
    assert_eq!(
        networks,
        [
            "127.0.0.0/8",
            "fd00::/8",
            "10.1.2.3/32",
            "::1/128",
            "127.0.0.2/32"
        ]
    );

    let network_error = |entry: &str, reason| {
        assert_eq!(
            EgressPolicy::new(false, [entry]),
            Err(EgressPolicyError::InvalidNetwork {
                entry: entry.to_owned(),
                reason
            }),
            "{entry}"
        );
    };
    network_error("10.0.0.1/8", NetworkError::HostBits);
    network_error("10.0.0.0/33", NetworkError::Prefix);
    network_error("::/129", NetworkError::Prefix);
    network_error("10.0.0.0/", NetworkError::Prefix);
    network_error("10.0.0.0/+8", NetworkError::Prefix);
    network_error("10.0.0/8", NetworkError::Address);

    for entry in [
        "*.example.com",
        "hooks.example.com:443",
        "user@hooks.example.com",
        "exa mple.com",
        "a..b",
        "hooks.example.com?x",
        "hooks.example.com#x",
        "hooks.example.com/path",
        "https://hooks.example.com/",
    ] {
        let error = EgressPolicy::new(false, [entry]).expect_err(entry);
        assert_eq!(
            error,
            EgressPolicyError::InvalidEntry {
                entry: entry.to_owned()
            }
        );
        assert!(error.to_string().contains(entry), "{error}");
    }
    assert_eq!(
        EgressPolicy::new(false, ["10.0.0.1/8"])
            .expect_err("host bits")
            .to_string(),
        "egress allow-list entry \"10.0.0.1/8\" is not a valid CIDR range: \
         the address has bits set beyond the prefix length"
    );

    let net: IpNetwork = "0.0.0.0/0".parse().expect("everything");
    assert!(net.contains(ip("255.1.2.3")));
    assert!(net.contains(ip("::ffff:1.2.3.4")));
    assert!(!net.contains(ip("::1")));
}

#[test]
fn error_messages_are_stable_and_never_echo_the_url() {
    let strict = EgressPolicy::default();
    let messages = [
        (
            strict.check_url("https://exa mple.com/?token=SECRET"),
            "the webhook URL is not a valid absolute URL (invalid international domain name)",
        ),
        (
            strict.check_url("http://example.com/?token=SECRET"),
            "the webhook URL must use https",
        ),
        (
            policy(true, &[]).check_url("ftp://example.com/?token=SECRET"),
            "the webhook URL must use http or https",
        ),
        (
            strict.check_url("https://admin:SECRET@example.com/"),
            "the webhook URL must not contain a user name or password",
        ),
        (
            strict.check_url("https://10.0.0.1/?token=SECRET"),
            "the webhook URL's host is a private-network address, which webhooks may not \
             target unless the operator allows it",
        ),
        (
            strict.check_url("https://metadata.google.internal/?token=SECRET"),
            "the webhook URL's host is a cloud metadata service, which webhooks may not \
             target unless the operator allows it",
        ),
    ];
    for (result, message) in messages {
        let error = result.expect_err(message).to_string();
        assert_eq!(error, message);
        assert!(!error.contains("SECRET") && !error.contains("example"));
    }
    assert_eq!(
        SsrfError::BlockedResolvedAddress(Loopback).to_string(),
        "the webhook URL's host name resolves to a loopback address, which webhooks may not \
         target unless the operator allows it"
    );
    assert_eq!(
        SsrfError::Unresolvable.to_string(),
        "the webhook URL's host name does not resolve"
    );
    assert_eq!(
        SsrfError::MissingHost.to_string(),
        "the webhook URL must name a host"
    );
}

async fn resolve(resolver: &GuardedResolver, name: &str) -> Result<Vec<IpAddr>, String> {
    match resolver.resolve(name.parse().expect("name")).await {
        Ok(addrs) => Ok(addrs.map(|a: SocketAddr| a.ip()).collect()),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn resolver_returns_only_allowed_addresses() {
    let strict =
        GuardedResolver::with_lookup(Arc::new(EgressPolicy::default()), FakeDns::default());
    assert_eq!(
        resolve(&strict, "mixed.example").await,
        Ok(vec![ip("93.184.216.34")])
    );
    assert_eq!(
        resolve(&strict, "public.example").await,
        Ok(vec![ip("93.184.216.34"), ip("2606:2800:220:1::1946")])
    );
    assert_eq!(
        resolve(&strict, "loopback.example").await,
        Err(SsrfError::BlockedResolvedAddress(Loopback).to_string())
    );
    assert_eq!(
        resolve(&strict, "mapped.example").await,
        Err(SsrfError::BlockedResolvedAddress(CloudMetadata).to_string())
    );
    assert_eq!(
        resolve(&strict, "localhost").await,
        Err(SsrfError::BlockedResolvedAddress(Loopback).to_string())
    );
    assert_eq!(
        resolve(&strict, "metadata.google.internal").await,
        Err(SsrfError::MetadataHost.to_string())
    );
    assert_eq!(
        resolve(&strict, "Metadata.").await,
        Err(SsrfError::MetadataHost.to_string())
    );
    assert_eq!(
        resolve(&strict, "nowhere.example").await,
        Err(SsrfError::Unresolvable.to_string())
    );
    assert_eq!(
        resolve(&strict, "127.0.0.1").await,
        Err(SsrfError::BlockedAddress(Loopback).to_string())
    );

    // Rebinding: public when the endpoint is checked, loopback at connect.
    let dns = FakeDns::default();
    let rebinding = GuardedResolver::with_lookup(Arc::new(EgressPolicy::default()), dns.clone());
    assert!(
        EgressPolicy::default()
            .check_url_resolving_with("https://rebind.example/", &dns)
            .await
            .is_ok()
    );
    assert_eq!(
        resolve(&rebinding, "rebind.example").await,
        Err(SsrfError::BlockedResolvedAddress(Loopback).to_string())
    );

    let named = GuardedResolver::with_lookup(
        Arc::new(policy(false, &["hooks.internal"])),
        FakeDns::default(),
    );
    assert_eq!(
        resolve(&named, "hooks.internal").await,
        Ok(vec![ip("10.0.0.5")])
    );
    assert_eq!(
        resolve(&named, "other.internal").await,
        Err(SsrfError::BlockedResolvedAddress(Private).to_string())
    );
}

/// A loopback listener that counts the connections it accepts (on
/// 127.0.0.1 and, when it can, on ::1 with the same port) and answers 204.
struct Canary {
    port: u16,
    on_v6: bool,
    hits: Arc<AtomicUsize>,
}

impl Canary {
    async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let v4 = TcpListener::bind("127.0.0.1:0").await.expect("canary bind");
        let port = v4.local_addr().expect("canary address").port();
        let v6 = TcpListener::bind(("::1", port)).await.ok();
        let on_v6 = v6.is_some();
        tokio::spawn(serve(v4, hits.clone(), |_| {
            "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n".to_owned()
        }));
        if let Some(v6) = v6 {
            tokio::spawn(serve(v6, hits.clone(), |_| {
                "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n".to_owned()
            }));
        }
        Self { port, on_v6, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Accepts forever, counting connections; answers each request with
/// `respond(path)`.
async fn serve(
    listener: TcpListener,
    hits: Arc<AtomicUsize>,
    respond: impl Fn(&str) -> String + Send + Sync + Clone + 'static,
) {
    while let Ok((stream, _)) = listener.accept().await {
        hits.fetch_add(1, Ordering::SeqCst);
        let respond = respond.clone();
        tokio::spawn(async move {
            let _ = answer(stream, respond).await;
        });
    }
}

async fn answer(mut stream: TcpStream, respond: impl Fn(&str) -> String) -> io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while request.len() < head_end + length {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    stream.write_all(respond(path).as_bytes()).await?;
    stream.shutdown().await
}

#[derive(Debug)]
enum Delivery {
    Refused(SsrfError),
    Failed(String),
    Status(u16),
}

impl Delivery {
    fn describe(&self) -> String {
        match self {
            Self::Refused(e) => format!("refused before sending: {}", short(&Err(e.clone()))),
            Self::Failed(e) => format!("no connection: {e}"),
            Self::Status(s) => format!("HTTP {s}"),
        }
    }
}

/// What the delivery worker does: `check_before_send`, then a POST with the
/// guarded client.
async fn deliver(policy: &EgressPolicy, client: &reqwest::Client, url: &str) -> Delivery {
    let url = Url::parse(url).expect("test URL");
    if let Err(e) = policy.check_before_send(&url) {
        return Delivery::Refused(e);
    }
    match client
        .post(url)
        .header("content-type", "application/json")
        .body(r#"{"type":"ping"}"#)
        .send()
        .await
    {
        Ok(response) => Delivery::Status(response.status().as_u16()),
        Err(e) => {
            // The innermost cause: the guard's sentence, or the I/O error.
            let mut cause: &dyn std::error::Error = &e;
            while let Some(source) = cause.source() {
                cause = source;
            }
            Delivery::Failed(cause.to_string())
        }
    }
}

/// Every URL form that reaches the canary when loopback is allowed.
fn canary_urls(canary: &Canary) -> Vec<String> {
    let port = canary.port;
    let mut urls: Vec<String> = [
        "http://127.0.0.1:PORT/",
        "http://127.0.0.1:PORT/?token=SECRET",
        "http://2130706433:PORT/",
        "http://0x7f.1:PORT/",
        "http://0x7f000001:PORT/",
        "http://0177.0.0.1:PORT/",
        "http://127.1:PORT/",
        "http://[::ffff:127.0.0.1]:PORT/",
        "http://[::ffff:7f00:1]:PORT/",
        "http://localhost:PORT/",
        "http://LOCALHOST.:PORT/",
        "http://loopback.example:PORT/",
        "http://rebind.example:PORT/",
    ]
    .iter()
    .map(|u| u.replace("PORT", &port.to_string()))
    .collect();
    if canary.on_v6 {
        urls.push(format!("http://[::1]:{port}/"));
        urls.push(format!("http://[0:0:0:0:0:0:0:1]:{port}/"));
    }
    urls
}

#[tokio::test]
async fn canary_sees_no_connection_unless_the_operator_allows_loopback() {
    let canary = Canary::start().await;
    let urls = canary_urls(&canary);
    let mut rows = Vec::new();
    let mut refused_hits = 0;
    let mut allowed_hits = 0;

    // Refused under the default policy and under plain HTTP with nothing
    // allowed (so that the address checks refuse, not the scheme); then
    // the same deliveries with the operator allowing loopback and HTTP all
    // reach the canary, which shows that the count can see connections.
    for (name, policy, reaches) in [
        ("default", EgressPolicy::default(), false),
        ("http, nothing allowed", policy(true, &[]), false),
        (
            "http + 127.0.0.0/8 + ::1",
            policy(true, &["127.0.0.0/8", "::1"]),
            true,
        ),
    ] {
        let policy = Arc::new(policy);
        let dns = FakeDns::default();
        let resolver = GuardedResolver::with_lookup(policy.clone(), dns.clone());
        let client = client_builder(resolver, TIMEOUT).build().expect("client");
        for url in &urls {
            if url.contains("rebind.example") && policy.allow_http() {
                // Public when the endpoint is created, loopback at connect.
                let created = policy.check_url_resolving_with(url, &dns).await;
                assert_eq!(created.map(drop), Ok(()), "{name}: {url}");
            }
            let before = canary.hits();
            let outcome = deliver(&policy, &client, url).await;
            let reached = canary.hits() - before;
            rows.push(vec![
                name.to_owned(),
                url.clone(),
                outcome.describe(),
                reached.to_string(),
            ]);
            if reaches {
                allowed_hits += reached;
                assert!(
                    matches!(outcome, Delivery::Status(204)),
                    "{name}: {url}: {outcome:?}"
                );
            } else {
                refused_hits += reached;
                assert!(
                    !matches!(outcome, Delivery::Status(_)),
                    "{name}: {url} was delivered: {outcome:?}"
                );
            }
        }
    }

    print_table(
        "Deliveries to the loopback canary",
        &["policy", "URL", "outcome", "connections"],
        &rows,
    );
    println!(
        "canary: {refused_hits} connection(s) while refused, {allowed_hits} once allowed ({} URLs)",
        urls.len()
    );
    assert_eq!(refused_hits, 0, "a refused delivery reached the canary");
    assert!(
        allowed_hits >= urls.len(),
        "the canary saw too few connections"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let canary = Canary::start().await;
    let port = canary.port;
    let listener = TcpListener::bind("127.0.0.2:0")
        .await
        .expect("binding 127.0.0.2 (the redirecting server needs a second loopback address)");
    let redirector = listener.local_addr().expect("address").port();
    let redirector_hits = Arc::new(AtomicUsize::new(0));
    let locations: Vec<(&str, String)> = vec![
        (
            "/metadata",
            "http://169.254.169.254/latest/meta-data/".to_owned(),
        ),
        (
            "/metadata-name",
            "http://metadata.google.internal/computeMetadata/v1/".to_owned(),
        ),
        ("/canary", format!("http://127.0.0.1:{port}/")),
        ("/canary-decimal", format!("http://2130706433:{port}/")),
        ("/localhost", format!("http://localhost:{port}/")),
    ];
    let routes = locations.clone();
    tokio::spawn(serve(listener, redirector_hits.clone(), move |path| {
        let location = routes
            .iter()
            .find(|(p, _)| *p == path)
            .map_or("/", |(_, l)| l.as_str());
        format!(
            "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\
             connection: close\r\n\r\n"
        )
    }));

    let mut rows = Vec::new();
    for (name, entries) in [
        ("http + 127.0.0.2/32", &["127.0.0.2/32"][..]),
        ("http + 127.0.0.0/8", &["127.0.0.0/8"][..]),
    ] {
        let policy = Arc::new(policy(true, entries));
        let client = client(policy.clone(), TIMEOUT).expect("client");
        for (path, location) in &locations {
            let url = format!("http://127.0.0.2:{redirector}{path}");
            let before = canary.hits();
            let outcome = deliver(&policy, &client, &url).await;
            rows.push(vec![
                name.to_owned(),
                url.clone(),
                location.clone(),
                outcome.describe(),
                (canary.hits() - before).to_string(),
            ]);
            assert!(
                matches!(outcome, Delivery::Status(302)),
                "{url}: {outcome:?}"
            );
        }
    }
    print_table(
        "Redirects (302 to metadata and to the canary)",
        &["policy", "URL", "Location", "outcome", "canary connections"],
        &rows,
    );
    assert_eq!(redirector_hits.load(Ordering::SeqCst), 2 * locations.len());
    assert_eq!(canary.hits(), 0, "a redirect was followed to the canary");
}

/// Why the delivery code must call `check_before_send`: reqwest connects to
/// IP-literal hosts without asking the resolver. If this ever fails, reqwest
/// started resolving literals and the guard got stronger, not weaker.
#[tokio::test]
async fn reqwest_skips_the_resolver_for_ip_literals() {
    let canary = Canary::start().await;
    let strict = Arc::new(EgressPolicy::default());
    let client = client(strict.clone(), TIMEOUT).expect("client");
    let url = format!("http://127.0.0.1:{}/", canary.port);
    let unchecked = client.post(&url).send().await;
    assert!(unchecked.is_ok(), "{unchecked:?}");
    assert_eq!(canary.hits(), 1);
    assert_eq!(
        strict.check_before_send(&Url::parse(&url).expect("url")),
        Err(SsrfError::HttpsRequired)
    );
    assert_eq!(
        policy(true, &[]).check_before_send(&Url::parse(&url).expect("url")),
        Err(SsrfError::BlockedAddress(Loopback))
    );
}
