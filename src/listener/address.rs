//! Where a [`Listener`](crate::Listener) listens and a [`Client`](crate::Client) connects:
//! a Unix socket path, a Linux abstract name, or a TCP address.
//!
//! Python tells them apart by type (a `str` is a path, a `(host, port)` tuple is TCP); we
//! have one string, so the rule in [`Address`] decides. It is built so that a mistyped port
//! is an error, never a socket file named `localhost:99999` in the current directory. A
//! host name is resolved once, when the string is parsed; every address it resolves to is
//! kept, IPv4 ones first, because Python's `(host, port)` is IPv4 (`AF_INET`): a listener
//! binds the first, a client tries each in turn ([`ToAddress::to_addresses`]).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, ErrorKind, Result};

/// A listening address. Python: the `address` of `Listener`/`Client` (a path string, a
/// `'\0name'` string, or a `(host, port)` tuple).
///
/// Parsed from the forms Python users write, by these rules, first match wins:
///
/// 1. `"\0name"` or `"@name"` is an abstract name (Linux).
/// 2. A string with a `/` is a Unix path, always: write `"./name"` for a relative path
///    that would otherwise read as TCP.
/// 3. `"host:port"` is TCP when the port is a number from 0 to 65535 and the host is
///    non-empty: an IPv4 address, `[IPv6]` in brackets (an unbracketed IPv6 address before
///    the last `:` works too), or a host name, which is resolved here (`InvalidInput` if it
///    does not resolve). A name with several addresses becomes the first IPv4 one if it
///    has one, else the first; [`ToAddress::to_addresses`] keeps them all.
/// 4. What looks like TCP with a bad port is `InvalidInput`, naming the problem:
///    - an IPv6 address with no port, bare or in brackets (`"::1"`, `"[::1]"`), or
///      `"[IPv6]:"` followed by anything but a valid port;
///    - an IP address, a `:`, and anything but a valid port (`"127.0.0.1:"`,
///      `"127.0.0.1:70000"`, `"127.0.0.1:80 "`, `"10.0.0.1:http"`);
///    - a plausible host name (letters, digits, `-`, `_`, dot-separated), a `:`, and a
///      port-like text that is not a valid port: nothing, or digits (with a sign or
///      spaces) out of range (`"localhost:"`, `"localhost:99999"`, `"db: 5432"`);
///    - a port with no host (`":6000"`, Python's `('', 6000)` as a string): Python would
///      take it for a socket file; the error suggests `"0.0.0.0:6000"`.
/// 5. Anything else is a Unix path: no `:` (`"app.sock"`, and `"127.0.0.1"`, as in
///    Python), or a `:` that cannot be a port typo (`"a:b"`, `"run:v2.sock"`).
///
/// Displayed (`to_string`), an address reads back as the same address: an abstract name
/// as `@name`, IPv6 in brackets, and a relative path whose text would read as something
/// else (`Path::new("localhost:6000")`, `Path::new("@x")`) with `./` before it. A path or
/// abstract name that is not UTF-8 is displayed lossily, and does not read back.
///
/// # Examples
/// ```
/// use multiproc::{Address, ErrorKind};
/// let tcp: Address = "127.0.0.1:6000".parse().unwrap();
/// assert!(matches!(tcp, Address::Tcp(_)));
/// let v6: Address = "[::1]:6000".parse().unwrap();
/// assert_eq!(v6.to_string(), "[::1]:6000");
/// let path: Address = "/tmp/app.sock".parse().unwrap();
/// assert!(matches!(path, Address::Unix(_)));
/// let name: Address = "@app".parse().unwrap();
/// assert_eq!(name, Address::Abstract(b"app".to_vec()));
/// assert_eq!(name.to_string(), "@app");
/// // A colon that cannot start a port is part of a path...
/// assert_eq!("a:b".parse::<Address>().unwrap(), Address::Unix("a:b".into()));
/// // ...but a bad port is an error, and "./" makes any name a path.
/// let err = "localhost:99999".parse::<Address>().unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// assert!(err.to_string().contains("port 99999 is out of range"));
/// let odd: Address = "./localhost:99999".parse().unwrap();
/// assert_eq!(odd, Address::Unix("./localhost:99999".into()));
/// // A relative path that reads as TCP is displayed so that it reads back as a path.
/// let file = Address::Unix("localhost:6000".into());
/// assert_eq!(file.to_string(), "./localhost:6000");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix socket at this path.
    Unix(PathBuf),
    /// A Linux abstract Unix socket name (no file; gone when the listener closes).
    Abstract(Vec<u8>),
    /// A TCP address, IPv4 or IPv6.
    Tcp(SocketAddr),
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Address> {
        let mut all = parse_all(s)?;
        Ok(all.swap_remove(0))
    }
}

/// Every address `s` names, never none: several only for a host name with several
/// addresses, ordered by [`ipv4_first`].
fn parse_all(s: &str) -> Result<Vec<Address>> {
    match classify(s) {
        Form::Abstract(name) => Ok(vec![Address::Abstract(name.as_bytes().to_vec())]),
        Form::Unix => Ok(vec![Address::Unix(PathBuf::from(s))]),
        Form::Tcp(addr) => Ok(vec![Address::Tcp(addr)]),
        Form::HostName(host) => Ok(resolve(s, host)?.into_iter().map(Address::Tcp).collect()),
        Form::Invalid(message) => Err(Error::with_message(ErrorKind::InvalidInput, message)),
    }
}

/// What a string names by the rules of [`Address`], before any host name is resolved.
#[derive(Debug, PartialEq)]
enum Form<'a> {
    /// An abstract name (the text after `\0` or `@`).
    Abstract(&'a str),
    /// A Unix socket path: the whole text.
    Unix,
    /// A TCP address written as one.
    Tcp(SocketAddr),
    /// `host:port` with a valid port: this host name is to be resolved.
    HostName(&'a str),
    /// Not an address: why.
    Invalid(String),
}

/// Which [`Form`] `s` has; no side effects (no name is resolved).
fn classify(s: &str) -> Form<'_> {
    if s.is_empty() {
        return Form::Invalid("empty address".to_owned());
    }
    if let Some(name) = s.strip_prefix('\0').or_else(|| s.strip_prefix('@')) {
        return Form::Abstract(name);
    }
    if s.contains('/') {
        return Form::Unix;
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Form::Tcp(addr);
    }
    if let Some((host, port)) = s.rsplit_once(':') {
        // A bare IPv6 address ("::1") splits into a host (":") and a port ("1") too; it is
        // an address with a port only when its host is an address itself ("::1:80", taken
        // as [::1]:80 as it always was).
        let bare_ipv6 = is_ipv6(s) && !is_ipv6(host);
        if !host.is_empty() && port.parse::<u16>().is_ok() && !bare_ipv6 {
            return Form::HostName(host);
        }
    }
    match port_problem(s) {
        Some(problem) => Form::Invalid(format!("{s:?} is not a valid TCP address: {problem}")),
        None => Form::Unix,
    }
}

/// What is wrong with `s`, if it is meant as TCP (rule 4 of [`Address`]); `None` for a
/// path. Only asked about a string with no `/` that is not a valid TCP address.
fn port_problem(s: &str) -> Option<String> {
    let path_hint = || format!("; write \"./{s}\" for a Unix socket path");
    if let Some((inside, after)) = s.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
        if is_ipv6(inside) {
            return Some(match after.strip_prefix(':') {
                Some(port) => bad_port(port),
                None => format!("an IPv6 address needs a port, as in \"[{inside}]:6000\""),
            });
        }
    }
    if is_ipv6(s) {
        return Some(format!(
            "an IPv6 address needs brackets and a port, as in \"[{s}]:6000\""
        ));
    }
    let (host, port) = s.rsplit_once(':')?;
    if host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        // Python's `Listener(('', 6000))` written as a string: no host to listen at.
        return Some(format!(
            "no host before the port: write \"0.0.0.0:{port}\" for every IPv4 interface, \
             \"127.0.0.1:{port}\" for this machine only{}",
            path_hint()
        ));
    }
    let meant_as_tcp = host.parse::<IpAddr>().is_ok() || (is_host_name(host) && is_port_like(port));
    meant_as_tcp.then(|| bad_port(port) + &path_hint())
}

/// Why `port` (the text after the `:`) is not a port.
fn bad_port(port: &str) -> String {
    if port.is_empty() {
        "missing port after ':'".to_owned()
    } else if port.bytes().all(|b| b.is_ascii_digit()) {
        format!("port {port} is out of range (0 to 65535)")
    } else {
        format!("invalid port {port:?} (a number from 0 to 65535)")
    }
}

/// An IPv6 address, with or without a `%zone`.
fn is_ipv6(text: &str) -> bool {
    let address = text
        .split_once('%')
        .map_or(text, |(address, _zone)| address);
    address.parse::<Ipv6Addr>().is_ok()
}

/// Whether `host` could be a host name: dot-separated labels of 1 to 63 letters, digits,
/// `-` and `_` (resolvers accept `_`, which `/etc/hosts` and container names use), not
/// starting or ending with `-`; one trailing dot allowed.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Whether the text after a `:` reads as an attempt at a port: empty, or digits with an
/// optional sign and surrounding spaces.
fn is_port_like(port: &str) -> bool {
    let port = port.trim_ascii();
    let digits = port
        .strip_prefix('+')
        .or_else(|| port.strip_prefix('-'))
        .unwrap_or(port);
    digits.bytes().all(|b| b.is_ascii_digit())
}

/// The addresses of `text` (`host:port`, `port` valid), by [`ipv4_first`].
fn resolve(text: &str, host: &str) -> Result<Vec<SocketAddr>> {
    let found = text.to_socket_addrs().map_err(|e| {
        Error::with_source(
            ErrorKind::InvalidInput,
            format!("cannot resolve {host:?}"),
            e,
        )
    })?;
    let ordered = ipv4_first(found);
    if ordered.is_empty() {
        return Err(Error::with_message(
            ErrorKind::InvalidInput,
            format!("{host:?} has no address"),
        ));
    }
    Ok(ordered)
}

/// The resolver's addresses, IPv4 ones first, each family in the resolver's order,
/// duplicates dropped. Python binds and connects a `(host, port)` over IPv4 only, so the
/// first IPv4 address is the one it uses; the IPv6 ones stay as a client's fallbacks (a
/// server may listen on `::1` alone).
fn ipv4_first(found: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut unique: Vec<SocketAddr> = Vec::new();
    for addr in found {
        if !unique.contains(&addr) {
            unique.push(addr);
        }
    }
    // A stable sort: false (IPv4) before true (IPv6), order kept within each.
    unique.sort_by_key(SocketAddr::is_ipv6);
    unique
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => {
                let text = path.display().to_string();
                // A relative path whose text reads as another address ("localhost:6000",
                // "@x") is written "./localhost:6000": the same file, and read back as a path.
                if path.is_relative() && !text.is_empty() && classify(&text) != Form::Unix {
                    write!(f, "./{text}")
                } else {
                    f.write_str(&text)
                }
            }
            Address::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
            Address::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Tcp(addr)
    }
}

impl From<PathBuf> for Address {
    fn from(path: PathBuf) -> Address {
        Address::Unix(path)
    }
}

impl From<&Path> for Address {
    fn from(path: &Path) -> Address {
        Address::Unix(path.to_owned())
    }
}

/// Anything that names an [`Address`]: the address itself, a string to parse, a
/// `SocketAddr`, a path.
///
/// # Examples
/// ```
/// use multiproc::{Address, ToAddress};
/// assert_eq!("@x".to_address().unwrap(), Address::Abstract(b"x".to_vec()));
/// ```
pub trait ToAddress {
    /// The address.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::net::SocketAddr;
    /// use std::path::Path;
    /// use multiproc::{Address, ErrorKind, ToAddress};
    /// let tcp: SocketAddr = "127.0.0.1:6000".parse().unwrap();
    /// assert_eq!("127.0.0.1:6000".to_address()?, Address::Tcp(tcp));
    /// assert_eq!(tcp.to_address()?, Address::Tcp(tcp));
    /// assert_eq!(Path::new("app.sock").to_address()?, Address::Unix("app.sock".into()));
    /// let err = "127.0.0.1:70000".to_address().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidInput);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for an empty string, a bad port or a host name that does not
    /// resolve (see [`Address`]).
    fn to_address(&self) -> Result<Address>;

    /// Every address this names, in the order a [`Client`](crate::Client) tries them; the
    /// first is [`to_address`](Self::to_address)'s. Several for a host name that resolves
    /// to several addresses (IPv4 ones first, as Python connects over IPv4); otherwise,
    /// and by default, the one address.
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Address, ToAddress};
    /// let all = "localhost:6000".to_addresses().unwrap();
    /// assert_eq!(all[0], "localhost:6000".to_address().unwrap());
    /// assert!(all.iter().all(|a| matches!(a, Address::Tcp(t) if t.ip().is_loopback())));
    /// assert_eq!("@x".to_addresses().unwrap(), [Address::Abstract(b"x".to_vec())]);
    /// ```
    ///
    /// # Errors
    /// As [`to_address`](Self::to_address).
    fn to_addresses(&self) -> Result<Vec<Address>> {
        Ok(vec![self.to_address()?])
    }
}

impl ToAddress for Address {
    fn to_address(&self) -> Result<Address> {
        Ok(self.clone())
    }
}

impl ToAddress for str {
    fn to_address(&self) -> Result<Address> {
        self.parse()
    }

    fn to_addresses(&self) -> Result<Vec<Address>> {
        parse_all(self)
    }
}

impl ToAddress for String {
    fn to_address(&self) -> Result<Address> {
        self.parse()
    }

    fn to_addresses(&self) -> Result<Vec<Address>> {
        parse_all(self)
    }
}

impl ToAddress for SocketAddr {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Tcp(*self))
    }
}

impl ToAddress for Path {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Unix(self.to_owned()))
    }
}

impl ToAddress for PathBuf {
    fn to_address(&self) -> Result<Address> {
        Ok(Address::Unix(self.clone()))
    }
}

impl<T: ToAddress + ?Sized> ToAddress for &T {
    fn to_address(&self) -> Result<Address> {
        (**self).to_address()
    }

    fn to_addresses(&self) -> Result<Vec<Address>> {
        (**self).to_addresses()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_forms_parse() {
        let cases: [(&str, Address); 6] = [
            ("/run/x.sock", Address::Unix("/run/x.sock".into())),
            ("x.sock", Address::Unix("x.sock".into())),
            ("\0name", Address::Abstract(b"name".to_vec())),
            ("@name", Address::Abstract(b"name".to_vec())),
            (
                "127.0.0.1:80",
                Address::Tcp("127.0.0.1:80".parse().unwrap()),
            ),
            ("[::1]:80", Address::Tcp("[::1]:80".parse().unwrap())),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Address>().unwrap(), want, "{text}");
        }
        assert!(matches!(
            "localhost:80".parse::<Address>().unwrap(),
            Address::Tcp(a) if a.port() == 80 && a.ip().is_loopback()
        ));
        assert!("".parse::<Address>().is_err());
        // A relative path with a colon but no valid port stays a path.
        assert_eq!(
            "a:b".parse::<Address>().unwrap(),
            Address::Unix("a:b".into())
        );
    }

    #[test]
    fn port_typos_are_errors_not_paths() {
        for text in [
            "127.0.0.1:70000",
            "localhost:99999",
            "[::1]:99999",
            "127.0.0.1:",
            "127.0.0.1:80 ",
            ":6000",
            ":0",
            "127.0.0.1: 80",
            "127.0.0.1:http",
            "localhost:",
            "localhost:65536",
            "my-host.example:123456",
            "::1",
            "fe80::1",
            "2001:db8::1",
            "::1:99999",
            "[::1]",
            "[::1]:",
            "[::1]:x",
        ] {
            let err = text.parse::<Address>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{text:?}");
            assert!(err.to_string().contains("port"), "{text:?}: {err}");
        }
        let err = "localhost:99999".parse::<Address>().unwrap_err();
        assert!(err.to_string().contains("99999"), "{err}");
    }

    #[test]
    fn paths_with_colons_stay_paths() {
        for text in [
            "a:b",
            "x.sock",
            "127.0.0.1",
            "localhost",
            "app:sock",
            "run:v2.sock",
            ":http",
            "my socket:99999",
            "./localhost:99999",
            "/tmp/127.0.0.1:70000",
            "dir/[::1]:99999",
            "sub/a:",
        ] {
            assert_eq!(
                text.parse::<Address>().unwrap(),
                Address::Unix(text.into()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn every_displayed_address_reads_back_as_the_same_kind() {
        for path in [
            "localhost:6000",
            "127.0.0.1:9",
            "@x",
            "::1",
            "[::1]:9",
            "a:1",
            "localhost:99999",
            "x.sock",
            "a:b",
            "/abs/localhost:6000",
        ] {
            let address = Address::Unix(path.into());
            let shown = address.to_string();
            assert!(shown.ends_with(path), "{path:?} shown as {shown:?}");
            match classify(&shown) {
                Form::Unix => {}
                other => panic!("{path:?} shown as {shown:?}, which reads as {other:?}"),
            }
        }
        // Paths that read as paths are shown as they are.
        assert_eq!(Address::Unix("x.sock".into()).to_string(), "x.sock");
        assert_eq!(Address::Unix("a:b".into()).to_string(), "a:b");
        for text in ["@x", "@", "@a\0b", "127.0.0.1:9", "[::1]:9", "/tmp/x"] {
            let address: Address = text.parse().unwrap();
            assert_eq!(address.to_string().parse::<Address>().unwrap(), address);
        }
    }

    #[test]
    fn tcp_forms_that_parsed_still_parse() {
        for (text, want) in [
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("127.0.0.1:65535", "127.0.0.1:65535"),
            ("[::1]:0", "[::1]:0"),
            ("::1:80", "[::1]:80"),
            ("localhost:0", "127.0.0.1:0"),
        ] {
            assert_eq!(
                text.parse::<Address>().unwrap(),
                Address::Tcp(want.parse().unwrap()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn resolved_addresses_put_ipv4_first_in_resolver_order() {
        let addr = |text: &str| text.parse::<SocketAddr>().unwrap();
        let found = [
            addr("[::1]:7"),
            addr("127.0.0.1:7"),
            addr("[fe80::1]:7"),
            addr("10.0.0.1:7"),
            addr("127.0.0.1:7"),
        ];
        assert_eq!(
            ipv4_first(found),
            [
                addr("127.0.0.1:7"),
                addr("10.0.0.1:7"),
                addr("[::1]:7"),
                addr("[fe80::1]:7"),
            ]
        );
        assert_eq!(ipv4_first([addr("[::1]:7")]), [addr("[::1]:7")]);
        assert!(ipv4_first([]).is_empty());
    }
}
