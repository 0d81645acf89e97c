//! Domain bindings: a web app's "machine" is the domain it runs on, written into the token's opaque `fingerprint`
//! claim as `domain:` + a normalised domain. This module normalises domains (so the issuer and every verifier agree
//! on one text per name), says which hosts a binding admits, and reads a binding back out of a fingerprint.
//!
//! Format v1 is untouched: a verifier without this module sees a fingerprint that no machine fingerprint equals
//! (machine fingerprints are 22 base64url characters and never contain `:`). docs/token-format.md §17 is the prose
//! version of the rules below; `tests/vectors/domains.json` and `tests/vectors/domain_covers.json` pin them.

use alloc::string::String;
use alloc::vec::Vec;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

/// What a domain-bound token's `fingerprint` claim starts with; the normalised domain follows.
pub const DOMAIN_BINDING_PREFIX: &str = "domain:";

/// Longest normalised domain (with a `*.` if any) that fits a v1 fingerprint after the prefix: 128 - 7 = 121.
pub const MAX_DOMAIN_LEN: usize = crate::format::limits::MAX_FINGERPRINT_LEN - DOMAIN_BINDING_PREFIX.len();

/// The longest DNS label, in bytes (RFC 1035), which UTS 46 _VerifyDNSLength_ also enforces.
const MAX_LABEL_LEN: usize = 63;

/// Why a text is not a domain a license can be bound to (or the host an app runs on).
///
/// Every variant has a stable [`DomainError::code`], the same string the issuer and other-language verifiers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// The text is empty.
    #[error("the domain is empty")]
    Empty,
    /// The text holds whitespace, a control character, or an ASCII character that is not a letter, digit, `-` or `.`
    /// (a port, path, user, bracket or underscore, for example).
    #[error("the domain holds a character no domain name has (space, port, path, `@`...); give a name: example.com")]
    ForbiddenCharacter,
    /// A `*` anywhere but a leading `*.`, or a wildcard where only one host is allowed.
    #[error("a wildcard is allowed only as a leading `*.` of a licensed domain, never in a host name")]
    Wildcard,
    /// A wildcard whose base has fewer than two labels, such as `*.com`.
    #[error("the wildcard is too broad: its base needs at least two labels, as in *.example.com")]
    WildcardTooBroad,
    /// An IP address (IPv4 or IPv6) instead of a name.
    #[error("the domain is an IP address; domain licenses are for names, such as example.com")]
    IpAddress,
    /// Two dots in a row, a leading dot, or more than one trailing dot.
    #[error("the domain has an empty label (two dots in a row, a leading dot, or two trailing dots)")]
    EmptyLabel,
    /// UTS 46 processing refused the name: a character IDNA disallows, or an `xn--` label that is not valid Punycode.
    #[error("the domain is not a valid internationalised domain name (IDNA, UTS 46)")]
    Idna,
    /// The normalised domain is longer than [`MAX_DOMAIN_LEN`] bytes, or one of its labels longer than 63.
    #[error("the domain is too long: at most 121 bytes once normalised (with `*.`), and 63 per label")]
    TooLong,
    /// A binding's domain parses but is not written in its normalised form (only [`Domain::from_binding`] says this).
    #[error("the domain binding is not written in normalised form")]
    NonCanonical,
}

impl DomainError {
    /// A stable, machine-readable code for this error (snake_case), listed in docs/token-format.md §17.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::Empty => "empty",
            DomainError::ForbiddenCharacter => "forbidden_character",
            DomainError::Wildcard => "wildcard",
            DomainError::WildcardTooBroad => "wildcard_too_broad",
            DomainError::IpAddress => "ip_address",
            DomainError::EmptyLabel => "empty_label",
            DomainError::Idna => "idna",
            DomainError::TooLong => "too_long",
            DomainError::NonCanonical => "non_canonical",
        }
    }
}

/// A normalised domain: lowercase ASCII (IDNs in Punycode), no trailing dot, optionally a wildcard `*.`.
///
/// Two inputs that name the same domain give equal values, so equality of [`Domain::as_str`] is equality of names.
///
/// ```
/// use verifier::Domain;
///
/// // What the license was activated for, and the host the web app runs on.
/// let licensed = Domain::parse("*.Example.com")?;
/// assert_eq!(licensed.binding(), "domain:*.example.com");
/// assert!(licensed.covers(&Domain::host("shop.example.com")?));
/// assert!(!licensed.covers(&Domain::host("example.org")?));
/// assert_eq!(Domain::host("Bücher.example")?.as_str(), "xn--bcher-kva.example");
/// # Ok::<(), verifier::DomainError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Domain {
    /// The normalised text, `*.` included for a wildcard.
    text: String,
    /// Whether `text` starts with `*.`.
    wildcard: bool,
}

impl Domain {
    /// A domain as a license activation names it: optional `*.` (the domain and every subdomain, at any depth, count
    /// as one).
    pub fn parse(input: &str) -> Result<Domain, DomainError> {
        normalise(input, true)
    }

    /// The host an app runs on: never a wildcard (`*.` refused).
    pub fn host(input: &str) -> Result<Domain, DomainError> {
        normalise(input, false)
    }

    /// The normalised text: `example.com` or `*.example.com`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The domain without its `*.`, if any.
    pub fn base(&self) -> &str {
        if self.wildcard {
            &self.text[2..]
        } else {
            &self.text
        }
    }

    /// Whether this is a wildcard (`*.`) domain.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// Whether this binding admits `host`: the same name, or (wildcard) the base itself or any name ending in
    /// "." + base.
    ///
    /// `host` is normally from [`Domain::host`]; a wildcard `host` (from [`Domain::parse`]) is covered exactly when
    /// every name it stands for is.
    pub fn covers(&self, host: &Domain) -> bool {
        let host = host.as_str();
        if host == self.text {
            return true;
        }
        if !self.wildcard {
            return false;
        }
        let base = self.base();
        // The label boundary matters: `*.example.com` covers `shop.example.com`, never `badexample.com`.
        host == base || host.strip_suffix(base).is_some_and(|head| head.ends_with('.'))
    }

    /// The fingerprint claim text: "domain:" + [`Domain::as_str`].
    pub fn binding(&self) -> String {
        let mut text = String::with_capacity(DOMAIN_BINDING_PREFIX.len() + self.text.len());
        text.push_str(DOMAIN_BINDING_PREFIX);
        text.push_str(&self.text);
        text
    }

    /// The binding a fingerprint claim names: `None` when it is not a domain binding (no prefix); `Some(Err)` when it
    /// has the prefix but the rest is not a normalised domain ([`Domain::parse`] must give back exactly the same text,
    /// otherwise [`DomainError::NonCanonical`]).
    pub fn from_binding(fingerprint: &str) -> Option<Result<Domain, DomainError>> {
        let text = fingerprint.strip_prefix(DOMAIN_BINDING_PREFIX)?;
        // The issuer signs only normalised text, so anything else was not made by a conforming issuer; accepting it
        // would give one name several bindings.
        Some(Domain::parse(text).and_then(|d| if d.text == text { Ok(d) } else { Err(DomainError::NonCanonical) }))
    }

    /// Every binding text ([`Domain::binding`]) that would cover this host, most specific first: the host itself,
    /// then `*.` + the host, then `*.` + each parent that has at least two labels. (The issuer looks these up.)
    ///
    /// Only bindings [`Domain::parse`] accepts are listed, so `*.` + a one-label host and any text longer than
    /// [`MAX_DOMAIN_LEN`] are left out. For a wildcard (from [`Domain::parse`]) the list starts at its own text.
    pub fn covering_bindings(&self) -> Vec<String> {
        let mut bindings = Vec::new();
        if !self.wildcard {
            bindings.push(self.binding());
        }
        let mut base = self.base();
        // `*.` + base parses only while base has two labels or more (§17.2 step 9).
        while let Some((_, parent)) = base.split_once('.') {
            if 2 + base.len() <= MAX_DOMAIN_LEN {
                let mut text = String::with_capacity(DOMAIN_BINDING_PREFIX.len() + 2 + base.len());
                text.push_str(DOMAIN_BINDING_PREFIX);
                text.push_str("*.");
                text.push_str(base);
                bindings.push(text);
            }
            base = parent;
        }
        bindings
    }
}

impl core::fmt::Display for Domain {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The normalisation of docs/token-format.md §17.2, step by step in its order (the first failure is the error).
fn normalise(input: &str, wildcard_allowed: bool) -> Result<Domain, DomainError> {
    // Step 1.
    if input.is_empty() {
        return Err(DomainError::Empty);
    }
    // Step 2. Nothing is trimmed: a name with a stray space or newline is a caller's bug to see, not to guess around.
    if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(DomainError::ForbiddenCharacter);
    }
    // Step 3, before step 5, so that `[::1]` reads as an address rather than as forbidden characters.
    if is_ipv6_literal(input) {
        return Err(DomainError::IpAddress);
    }
    // Step 4.
    let (wildcard, rest) = match input.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    if (wildcard && !wildcard_allowed) || rest.contains('*') {
        return Err(DomainError::Wildcard);
    }
    // Step 5. Ports, paths, `@`, brackets, underscores...: STD3 would refuse them too, but as `idna`, which tells a
    // user less than this code does.
    if rest.bytes().any(|b| b.is_ascii() && !(b.is_ascii_alphanumeric() || b == b'-' || b == b'.')) {
        return Err(DomainError::ForbiddenCharacter);
    }
    // Step 6. The length checks are steps 7 and 10 rather than `DnsLength::Verify`, so that a long name is `too_long`
    // and an empty label `empty_label`, not `idna`; together they are stricter than VerifyDNSLength.
    let ascii = Uts46::new()
        .to_ascii(rest.as_bytes(), AsciiDenyList::STD3, Hyphens::Allow, DnsLength::Ignore)
        .map_err(|_| DomainError::Idna)?;
    // Step 7. One trailing dot, after mapping (so `。` counts as a dot too).
    let base = ascii.strip_suffix('.').unwrap_or(&ascii);
    if base.split('.').any(str::is_empty) {
        return Err(DomainError::EmptyLabel);
    }
    // Step 8. IPv4, in the WHATWG URL Standard's sense: a last label that is a number, which a browser would read as an
    // address (`192.168.0.1`, `0x7f.1`, even `example.123`).
    if base.rsplit('.').next().is_some_and(is_numeric_label) {
        return Err(DomainError::IpAddress);
    }
    // Step 9. No public-suffix list: `*.co.uk` passes, and the issuer decides what it lets a customer bind.
    if wildcard && !base.contains('.') {
        return Err(DomainError::WildcardTooBroad);
    }
    // Step 10.
    let len = base.len() + if wildcard { 2 } else { 0 };
    if len > MAX_DOMAIN_LEN || base.split('.').any(|label| label.len() > MAX_LABEL_LEN) {
        return Err(DomainError::TooLong);
    }
    let mut text = String::with_capacity(len);
    if wildcard {
        text.push_str("*.");
    }
    text.push_str(base);
    Ok(Domain { text, wildcard })
}

/// An IPv6 address literal, bracketed or not: at least two `:` and nothing but hex digits, `:` and `.` (the dots of
/// an embedded IPv4 address).
fn is_ipv6_literal(input: &str) -> bool {
    let inner = input.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(input);
    inner.bytes().filter(|&b| b == b':').count() >= 2
        && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
}

/// A label the WHATWG URL host parser reads as a number: all decimal digits, or `0x` then hex digits (maybe none).
/// The label is already lowercase.
fn is_numeric_label(label: &str) -> bool {
    match label.strip_prefix("0x") {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use alloc::vec;

    use super::*;

    fn code(input: &str) -> &'static str {
        Domain::parse(input).unwrap_err().code()
    }

    #[test]
    fn ascii_names_are_lowercased_and_lose_one_trailing_dot() {
        assert_eq!(Domain::parse("Shop.Example.COM.").unwrap().as_str(), "shop.example.com");
        assert_eq!(code("example.com.."), "empty_label");
        assert_eq!(code(".example.com"), "empty_label");
        assert_eq!(code("."), "empty_label");
    }

    #[test]
    fn wildcard_is_only_a_leading_star_dot_and_never_a_host() {
        let d = Domain::parse("*.Example.com").unwrap();
        assert!(d.is_wildcard());
        assert_eq!((d.as_str(), d.base()), ("*.example.com", "example.com"));
        assert_eq!(Domain::host("*.example.com").unwrap_err(), DomainError::Wildcard);
        for bad in ["a.*.b", "**.x.y", "*", "*example.com", "example.*"] {
            assert_eq!(code(bad), "wildcard", "{bad}");
        }
        assert_eq!(code("*.com"), "wildcard_too_broad");
        assert_eq!(code("*."), "empty_label");
    }

    #[test]
    fn addresses_ports_and_paths_are_refused() {
        for ip in ["192.168.0.1", "[::1]", "::1", "fe80::1", "example.123", "0x7f.1", "1"] {
            assert_eq!(code(ip), "ip_address", "{ip}");
        }
        for bad in ["example.com:443", "example.com/x", "a@example.com", "[example.com]", "a_b.com", " example.com"] {
            assert_eq!(code(bad), "forbidden_character", "{bad}");
        }
        assert_eq!(Domain::parse("123.example.com").unwrap().as_str(), "123.example.com");
    }

    #[test]
    fn length_limits_count_the_wildcard() {
        // `n` bytes in labels of at most 63: "aaa…a.bbb…b.com".
        let name = |n: usize| alloc::format!("{}.{}.com", "a".repeat(63), "b".repeat(n - 68));
        assert_eq!(Domain::parse(&name(121)).unwrap().as_str().len(), 121);
        assert_eq!(code(&name(122)), "too_long");
        let star = Domain::parse(&alloc::format!("*.{}", name(119))).unwrap();
        assert_eq!(star.binding().len(), crate::format::limits::MAX_FINGERPRINT_LEN);
        assert_eq!(code(&alloc::format!("*.{}", name(120))), "too_long");
        assert_eq!(code(&alloc::format!("{}.com", "a".repeat(64))), "too_long");
    }

    #[test]
    fn wildcard_covers_its_base_and_every_subdomain_on_label_boundaries() {
        let star = Domain::parse("*.example.com").unwrap();
        let host = |h| Domain::host(h).unwrap();
        assert!(star.covers(&host("example.com")));
        assert!(star.covers(&host("a.b.example.com")));
        assert!(!star.covers(&host("badexample.com")));
        assert!(!star.covers(&host("example.org")));
        let exact = Domain::parse("example.com").unwrap();
        assert!(exact.covers(&host("EXAMPLE.com")));
        assert!(!exact.covers(&host("shop.example.com")));
    }

    #[test]
    fn binding_round_trips_and_refuses_unnormalised_text() {
        let d = Domain::parse("*.Bücher.example").unwrap();
        assert_eq!(d.binding(), "domain:*.xn--bcher-kva.example");
        assert_eq!(Domain::from_binding(&d.binding()), Some(Ok(d)));
        assert_eq!(Domain::from_binding("cPFviWOfAHrkBhGe49wRxw"), None);
        assert_eq!(Domain::from_binding("domain:Example.com"), Some(Err(DomainError::NonCanonical)));
        assert_eq!(Domain::from_binding("domain:example.com."), Some(Err(DomainError::NonCanonical)));
        assert_eq!(Domain::from_binding("domain:*.com"), Some(Err(DomainError::WildcardTooBroad)));
        assert_eq!(Domain::from_binding("domain:"), Some(Err(DomainError::Empty)));
    }

    #[test]
    fn covering_bindings_go_from_the_host_to_its_widest_wildcard() {
        let h = Domain::host("a.shop.example.com").unwrap();
        let expected = vec![
            "domain:a.shop.example.com",
            "domain:*.a.shop.example.com",
            "domain:*.shop.example.com",
            "domain:*.example.com",
        ];
        assert_eq!(h.covering_bindings(), expected);
        assert_eq!(Domain::host("localhost").unwrap().covering_bindings(), vec!["domain:localhost"]);
        let star = Domain::parse("*.shop.example.com").unwrap();
        assert_eq!(star.covering_bindings(), vec!["domain:*.shop.example.com", "domain:*.example.com"]);
    }

    #[test]
    fn covering_bindings_leave_out_wildcards_too_long_to_bind() {
        let long = alloc::format!("{}.{}.example.com", "a".repeat(63), "b".repeat(45));
        let h = Domain::host(&long).unwrap();
        assert_eq!(h.as_str().len(), MAX_DOMAIN_LEN);
        let parent = alloc::format!("domain:*.{}.example.com", "b".repeat(45));
        assert_eq!(h.covering_bindings(), vec![h.binding(), parent, "domain:*.example.com".into()]);
    }
}
