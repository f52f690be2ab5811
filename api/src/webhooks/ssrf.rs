//! The SSRF guard: webhook target URLs are untrusted input.
//!
//! Two checkpoints, so DNS rebinding does not get through:
//!
//! 1. When an endpoint is created or updated,
//!    [`EgressPolicy::check_url_resolving`] refuses bad schemes, credentials
//!    in the URL, blocked IP literals (in every form the WHATWG URL parser
//!    accepts: `2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`, `[::ffff:…]`),
//!    cloud metadata host names, and host names any of whose addresses is
//!    blocked.
//! 2. At connect time, the [`client`] resolves every host name through a
//!    [`GuardedResolver`], which hands reqwest only allowed addresses;
//!    redirects are never followed and no proxy is used. reqwest does not
//!    call the resolver for IP-literal hosts, so the delivery code calls
//!    [`EgressPolicy::check_before_send`] before each request.
//!
//! Blocked, unless the operator allows the network or the host name:
//! loopback, unspecified, private, link-local (with the cloud metadata
//! address), carrier-grade NAT, multicast, broadcast, reserved,
//! benchmarking and documentation ranges; their IPv4-mapped,
//! IPv4-compatible, NAT64 and 6to4 IPv6 forms; IPv6 unique-local,
//! site-local, discard-only and documentation ranges and anything outside
//! global unicast (`2000::/3`); and the metadata names.
//!
//! Errors are one stable sentence each and never echo the URL (its query
//! may carry a token) nor the addresses a name resolved to.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Connect timeout of the webhook client, unless the whole attempt timeout
/// is shorter.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Host names of cloud metadata services, refused by name whatever they
/// resolve to.
const METADATA_HOSTS: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Why an address may not be targeted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    Loopback,
    Unspecified,
    /// RFC 1918 and IPv6 unique-local (`fc00::/7`).
    Private,
    LinkLocal,
    /// Carrier-grade NAT, `100.64.0.0/10`.
    SharedAddressSpace,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    /// IETF protocol assignments, future use, local NAT64 and everything in
    /// IPv6 outside global unicast.
    Reserved,
    SiteLocal,
    Discard,
    /// A cloud provider's instance metadata endpoint.
    CloudMetadata,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "a loopback address",
            Self::Unspecified => "an unspecified address",
            Self::Private => "a private-network address",
            Self::LinkLocal => "a link-local address",
            Self::SharedAddressSpace => "a carrier-grade NAT address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::Documentation => "a documentation address",
            Self::Benchmarking => "a benchmarking address",
            Self::Reserved => "a reserved address",
            Self::SiteLocal => "a site-local address",
            Self::Discard => "a discard-only address",
            Self::CloudMetadata => "a cloud metadata address",
        })
    }
}

/// Why a webhook URL is refused. Each message is one stable sentence that
/// never repeats the URL or the addresses its host resolved to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    /// The reason comes from the URL parser and never contains the input.
    #[error("the webhook URL is not a valid absolute URL ({0})")]
    InvalidUrl(String),
    #[error("the webhook URL must use https")]
    HttpsRequired,
    #[error("the webhook URL must use http or https")]
    UnsupportedScheme,
    #[error("the webhook URL must not contain a user name or password")]
    Credentials,
    #[error("the webhook URL must name a host")]
    MissingHost,
    #[error(
        "the webhook URL's host is {0}, which webhooks may not target unless the operator allows it"
    )]
    BlockedAddress(AddressClass),
    #[error(
        "the webhook URL's host name resolves to {0}, which webhooks may not target unless the operator allows it"
    )]
    BlockedResolvedAddress(AddressClass),
    #[error(
        "the webhook URL's host is a cloud metadata service, which webhooks may not target unless the operator allows it"
    )]
    MetadataHost,
    #[error("the webhook URL's host name does not resolve")]
    Unresolvable,
}

/// A bad entry in the operator's egress allow-list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressPolicyError {
    #[error("egress allow-list entry {entry:?} is not a valid CIDR range: {reason}")]
    InvalidNetwork { entry: String, reason: NetworkError },
    #[error(
        "egress allow-list entry {entry:?} is neither a host name nor an IP address or CIDR range (wildcards, ports and URLs are not accepted)"
    )]
    InvalidEntry { entry: String },
}

/// Why a CIDR range does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("the address is not a valid IPv4 or IPv6 address")]
    Address,
    #[error("the prefix length is not a number between 0 and 32 (IPv4) or 128 (IPv6)")]
    Prefix,
    #[error("the address has bits set beyond the prefix length")]
    HostBits,
}

/// An IP network in CIDR form (`127.0.0.0/8`, `fd00::/8`, `10.1.2.3/32`):
/// ipnet's type, parsed more strictly (see [`IpNetwork::new`]) and
/// containing the IPv4-mapped forms of an IPv4 network's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNetwork(IpNet);

impl IpNetwork {
    /// A network whose address has no bits set beyond `prefix`: an
    /// operator who writes `10.0.0.1/8` is told so rather than allowed
    /// 10.0.0.0/8, which may not be what they meant.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, NetworkError> {
        let network = IpNet::new(addr, prefix).map_err(|_| NetworkError::Prefix)?;
        if network.trunc() != network {
            return Err(NetworkError::HostBits);
        }
        Ok(Self(network))
    }

    /// The one-address network of `addr`.
    pub fn host(addr: IpAddr) -> Self {
        Self(IpNet::from(addr))
    }

    pub fn addr(&self) -> IpAddr {
        self.0.addr()
    }

    pub fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }

    /// Whether `ip` is in this network. An IPv4 network also contains the
    /// IPv4-mapped IPv6 form (`::ffff:a.b.c.d`) of its addresses, since
    /// connecting to one reaches the other.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip) || self.0.contains(&ip.to_canonical())
    }
}

impl FromStr for IpNetwork {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((addr, prefix)) => {
                let addr = addr.parse().map_err(|_| NetworkError::Address)?;
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(NetworkError::Prefix);
                }
                let prefix = prefix.parse().map_err(|_| NetworkError::Prefix)?;
                Self::new(addr, prefix)
            }
            None => Ok(Self::host(
                parse_ip_literal(s).ok_or(NetworkError::Address)?,
            )),
        }
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Where webhooks may go: HTTPS to public addresses, plus what the operator
/// allows. The default allows nothing extra.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow_http: bool,
    /// Lower case, without a trailing dot; compared exactly.
    allowed_hosts: Vec<String>,
    allowed_networks: Vec<IpNetwork>,
}

impl EgressPolicy {
    /// Parses the operator's allow-list: each entry is a host name (matched
    /// exactly, case-insensitively; its addresses are then not checked), an
    /// IP address, or a CIDR range. Blank entries are ignored.
    pub fn new<I, S>(allow_http: bool, entries: I) -> Result<Self, EgressPolicyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut policy = Self {
            allow_http,
            ..Self::default()
        };
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            let invalid = || EgressPolicyError::InvalidEntry {
                entry: entry.to_owned(),
            };
            if let Some((addr, _)) = entry.split_once('/') {
                let ip_like = addr
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':');
                if !ip_like {
                    return Err(invalid());
                }
                let network =
                    entry
                        .parse()
                        .map_err(|reason| EgressPolicyError::InvalidNetwork {
                            entry: entry.to_owned(),
                            reason,
                        })?;
                policy.allowed_networks.push(network);
                continue;
            }
            if let Some(ip) = parse_ip_literal(entry) {
                policy.allowed_networks.push(IpNetwork::host(ip));
                continue;
            }
            // Normalise the name exactly as a webhook URL's host would be.
            let url = Url::parse(&format!("http://{entry}/")).map_err(|_| invalid())?;
            let host = url.host_str().ok_or_else(invalid)?;
            if let Some(ip) = parse_ip_literal(host) {
                // `127.1` and friends: an address after all.
                policy.allowed_networks.push(IpNetwork::host(ip));
                continue;
            }
            let host = normalise_host(host);
            let valid = url.port().is_none()
                && url.username().is_empty()
                && url.password().is_none()
                && url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
                && !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !valid {
                return Err(invalid());
            }
            policy.allowed_hosts.push(host.to_owned());
        }
        Ok(policy)
    }

    pub fn allow_http(&self) -> bool {
        self.allow_http
    }

    pub fn allowed_hosts(&self) -> &[String] {
        &self.allowed_hosts
    }

    pub fn allowed_networks(&self) -> &[IpNetwork] {
        &self.allowed_networks
    }

    /// The checks that need no DNS: scheme, credentials, IP-literal hosts
    /// and metadata names. Returns the parsed URL to send to.
    pub fn check_url(&self, url: &str) -> Result<Url, SsrfError> {
        let url = Url::parse(url).map_err(|e| SsrfError::InvalidUrl(e.to_string()))?;
        self.check_before_send(&url)?;
        Ok(url)
    }

    /// [`check_url`](Self::check_url), then resolves a host name with the
    /// system resolver and refuses it if ANY of its addresses is blocked.
    /// For endpoint creation and updates.
    pub async fn check_url_resolving(&self, url: &str) -> Result<Url, SsrfError> {
        self.check_url_resolving_with(url, &SystemLookup).await
    }

    /// [`check_url_resolving`](Self::check_url_resolving) with a given
    /// resolver (tests inject their own).
    pub async fn check_url_resolving_with(
        &self,
        url: &str,
        lookup: &dyn Lookup,
    ) -> Result<Url, SsrfError> {
        let url = self.check_url(url)?;
        let host = url.host_str().ok_or(SsrfError::MissingHost)?;
        if parse_ip_literal(host).is_some() || self.host_allowed(host) {
            return Ok(url);
        }
        let addrs = lookup
            .lookup(normalise_host(host))
            .await
            .map_err(|_| SsrfError::Unresolvable)?;
        if addrs.is_empty() {
            return Err(SsrfError::Unresolvable);
        }
        for ip in addrs {
            self.check_ip(ip)
                .map_err(SsrfError::BlockedResolvedAddress)?;
        }
        Ok(url)
    }

    /// The checks to repeat right before every request, since reqwest does
    /// not pass IP-literal hosts through the [`GuardedResolver`]: scheme,
    /// credentials, IP-literal hosts and metadata names. Host names are
    /// checked after resolution, by the resolver.
    pub fn check_before_send(&self, url: &Url) -> Result<(), SsrfError> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ if self.allow_http => return Err(SsrfError::UnsupportedScheme),
            _ => return Err(SsrfError::HttpsRequired),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(SsrfError::Credentials);
        }
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host,
            _ => return Err(SsrfError::MissingHost),
        };
        self.check_host(host).map(drop)
    }

    /// Whether `ip` may be connected to: allowed by the operator, or in no
    /// blocked range.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), AddressClass> {
        if self.allowed_networks.iter().any(|n| n.contains(ip)) {
            return Ok(());
        }
        match classify(ip) {
            Some(class) => Err(class),
            None => Ok(()),
        }
    }

    /// For a host as written in a URL: `Some(ip)` for an allowed IP literal,
    /// `None` for a host name that still needs resolving (and checking),
    /// an error for a blocked literal or metadata name.
    fn check_host(&self, host: &str) -> Result<Option<IpAddr>, SsrfError> {
        if let Some(ip) = parse_ip_literal(host) {
            self.check_ip(ip).map_err(SsrfError::BlockedAddress)?;
            return Ok(Some(ip));
        }
        let name = normalise_host(host);
        let metadata = METADATA_HOSTS.iter().any(|m| m.eq_ignore_ascii_case(name));
        if metadata && !self.host_allowed(host) {
            return Err(SsrfError::MetadataHost);
        }
        Ok(None)
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = normalise_host(host);
        self.allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
    }
}

/// Why `ip` is blocked, or `None` for an address webhooks may target when
/// the operator allows nothing extra.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

/// Known cloud metadata endpoints: AWS/GCP/Azure/OpenStack (and AWS ECS
/// task metadata), Azure's WireServer, Alibaba, Oracle.
const METADATA_V4: &[Ipv4Addr] = &[
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(168, 63, 129, 16),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(192, 0, 0, 192),
];

/// AWS's IPv6 metadata endpoint.
const METADATA_V6: &[Ipv6Addr] = &[Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

const fn v4(octets: [u8; 4], prefix: u8, class: AddressClass) -> (Ipv4Net, AddressClass) {
    let [a, b, c, d] = octets;
    (
        Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix),
        class,
    )
}

/// IANA's IPv4 special-purpose ranges that are not globally reachable.
const BLOCKED_V4: &[(Ipv4Net, AddressClass)] = &[
    v4([255, 255, 255, 255], 32, AddressClass::Broadcast),
    v4([0, 0, 0, 0], 8, AddressClass::Unspecified),
    v4([10, 0, 0, 0], 8, AddressClass::Private),
    v4([100, 64, 0, 0], 10, AddressClass::SharedAddressSpace),
    v4([127, 0, 0, 0], 8, AddressClass::Loopback),
    v4([169, 254, 0, 0], 16, AddressClass::LinkLocal),
    v4([172, 16, 0, 0], 12, AddressClass::Private),
    v4([192, 0, 0, 0], 24, AddressClass::Reserved),
    v4([192, 0, 2, 0], 24, AddressClass::Documentation),
    // The deprecated 6to4 relay anycast prefix.
    v4([192, 88, 99, 0], 24, AddressClass::Reserved),
    v4([192, 168, 0, 0], 16, AddressClass::Private),
    v4([198, 18, 0, 0], 15, AddressClass::Benchmarking),
    v4([198, 51, 100, 0], 24, AddressClass::Documentation),
    v4([203, 0, 113, 0], 24, AddressClass::Documentation),
    v4([224, 0, 0, 0], 4, AddressClass::Multicast),
    v4([240, 0, 0, 0], 4, AddressClass::Reserved),
];

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    if METADATA_V4.contains(&ip) {
        return Some(AddressClass::CloudMetadata);
    }
    BLOCKED_V4
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, class)| *class)
}

const fn v6(segments: [u16; 8], prefix: u8, class: AddressClass) -> (Ipv6Net, AddressClass) {
    (v6_net(segments, prefix), class)
}

const fn v6_net(segments: [u16; 8], prefix: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

/// IPv4-compatible (deprecated), `::/96`.
const V4_COMPATIBLE: Ipv6Net = v6_net([0, 0, 0, 0, 0, 0, 0, 0], 96);
/// NAT64 well-known prefix, `64:ff9b::/96`.
const NAT64: Ipv6Net = v6_net([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
/// 6to4, `2002::/16`.
const SIX_TO_FOUR: Ipv6Net = v6_net([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);
/// Global unicast, `2000::/3`.
const GLOBAL_UNICAST: Ipv6Net = v6_net([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

/// IPv6 ranges blocked outright (the embedding ranges are handled first).
const BLOCKED_V6: &[(Ipv6Net, AddressClass)] = &[
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, AddressClass::Unspecified),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, AddressClass::Loopback),
    // Local-use NAT64 (RFC 8215): what it translates to is site-specific.
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, AddressClass::Reserved),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, AddressClass::Discard),
    // IETF protocol assignments, Teredo (whose embedded addresses are
    // obfuscated) and benchmarking.
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, AddressClass::Reserved),
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        AddressClass::Documentation,
    ),
    v6(
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        AddressClass::Documentation,
    ),
    // Segment routing (SRv6) SIDs.
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, AddressClass::Reserved),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, AddressClass::Private),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, AddressClass::LinkLocal),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, AddressClass::SiteLocal),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, AddressClass::Multicast),
];

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    // IPv4-mapped, ::ffff:0:0/96: the IPv4 address itself.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if METADATA_V6.contains(&ip) {
        return Some(AddressClass::CloudMetadata);
    }
    if let Some((_, class)) = BLOCKED_V6.iter().find(|(net, _)| net.contains(&ip)) {
        return Some(*class);
    }
    let bits = ip.to_bits();
    let low32 = Ipv4Addr::from_bits(bits as u32);
    // IPv4-compatible, ::/96 (deprecated): never legitimate; named after
    // the embedded address when that is blocked too.
    if V4_COMPATIBLE.contains(&ip) {
        return Some(classify_v4(low32).unwrap_or(AddressClass::Reserved));
    }
    // NAT64, 64:ff9b::/96: what DNS64 gives public IPv4 hosts on IPv6-only
    // networks, so allowed when the embedded address is.
    if NAT64.contains(&ip) {
        return classify_v4(low32);
    }
    // 6to4, 2002::/16: the IPv4 address is in bits 16..48.
    if SIX_TO_FOUR.contains(&ip) {
        return classify_v4(Ipv4Addr::from_bits((bits >> 80) as u32));
    }
    // Everything else outside global unicast is unassigned or special.
    if !GLOBAL_UNICAST.contains(&ip) {
        return Some(AddressClass::Reserved);
    }
    None
}

/// An IP address as the host of a parsed URL (`127.0.0.1` or `[::1]`), or
/// as a bare address in the allow-list.
fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Lower case is already guaranteed by the URL parser for http(s) hosts;
/// the trailing dot of a fully-qualified name is not removed by it.
fn normalise_host(host: &str) -> &str {
    host.strip_suffix('.').unwrap_or(host)
}

/// What [`Lookup::lookup`] returns.
pub type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Resolves a host name to addresses: the system resolver in production,
/// anything in tests (`Fn(&str) -> LookupFuture` closures implement it).
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: &str) -> LookupFuture;
}

impl<F> Lookup for F
where
    F: Fn(&str) -> LookupFuture + Send + Sync + 'static,
{
    fn lookup(&self, host: &str) -> LookupFuture {
        self(host)
    }
}

/// The system resolver (`getaddrinfo` on a blocking thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> LookupFuture {
        let host = host.to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A reqwest resolver that returns only the addresses the policy allows
/// (an error when none is left), so a name that passed the check at
/// creation time and now resolves to a blocked address (DNS rebinding)
/// never gets a connection.
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<EgressPolicy>,
    lookup: Arc<dyn Lookup>,
}

impl fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResolver")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl GuardedResolver {
    /// Resolves with the system resolver.
    pub fn new(policy: Arc<EgressPolicy>) -> Self {
        Self::with_lookup(policy, SystemLookup)
    }

    /// Resolves with `lookup` (tests inject a fake one).
    pub fn with_lookup(policy: Arc<EgressPolicy>, lookup: impl Lookup) -> Self {
        Self {
            policy,
            lookup: Arc::new(lookup),
        }
    }

    pub fn policy(&self) -> &Arc<EgressPolicy> {
        &self.policy
    }

    /// The addresses of `host` that may be connected to: all of them for a
    /// host the operator allows by name, otherwise those the policy allows.
    pub async fn allowed_addresses(&self, host: &str) -> Result<Vec<IpAddr>, SsrfError> {
        if let Some(ip) = self.policy.check_host(host)? {
            return Ok(vec![ip]);
        }
        let addrs = self
            .lookup
            .lookup(normalise_host(host))
            .await
            .map_err(|_| SsrfError::Unresolvable)?;
        if addrs.is_empty() {
            return Err(SsrfError::Unresolvable);
        }
        if self.policy.host_allowed(host) {
            return Ok(addrs);
        }
        let total = addrs.len();
        let mut first_blocked = None;
        let allowed: Vec<IpAddr> = addrs
            .into_iter()
            .filter(|ip| match self.policy.check_ip(*ip) {
                Ok(()) => true,
                Err(class) => {
                    first_blocked.get_or_insert(class);
                    false
                }
            })
            .collect();
        if let Some(class) = first_blocked {
            tracing::warn!(
                host,
                dropped = total - allowed.len(),
                kept = allowed.len(),
                "the egress policy dropped blocked addresses of a webhook host"
            );
            if allowed.is_empty() {
                return Err(SsrfError::BlockedResolvedAddress(class));
            }
        }
        Ok(allowed)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.allowed_addresses(name.as_str()).await?;
            // Port 0: reqwest puts in the URL's (or the scheme's) port.
            let addrs: Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The webhook client: host names resolved through a [`GuardedResolver`]
/// with the system resolver, no redirects followed, no proxy (a proxy
/// would resolve names itself), `timeout` per request. IP-literal hosts
/// are not seen by the resolver: call
/// [`EgressPolicy::check_before_send`] before each request.
pub fn client(policy: Arc<EgressPolicy>, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    client_builder(GuardedResolver::new(policy), timeout).build()
}

/// The builder behind [`client`], with any resolver (tests inject a fake
/// lookup). Add only TLS settings to it: the rest is the guard. Installs
/// ring as the process's rustls provider if none is.
pub fn client_builder(resolver: GuardedResolver, timeout: Duration) -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .dns_resolver(resolver)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout.min(CONNECT_TIMEOUT))
}
