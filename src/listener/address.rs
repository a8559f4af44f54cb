//! Where a [`Listener`](crate::Listener) listens and a [`Client`](crate::Client) connects:
//! a Unix socket path, a Linux abstract name, or a TCP address.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, ErrorKind, Result};

/// A listening address. Python: the `address` of `Listener`/`Client` (a path string, a
/// `'\0name'` string, or a `(host, port)` tuple).
///
/// Parsed from the forms Python users write: a string with a `/` or without a `:port` is
/// a Unix path; `"\0name"` or `"@name"` is an abstract name (Linux); `"host:port"` (with
/// `"[::1]:port"` for IPv6, and host names resolved) is TCP.
///
/// # Examples
/// ```
/// use multiproc::Address;
/// let tcp: Address = "127.0.0.1:6000".parse().unwrap();
/// assert!(matches!(tcp, Address::Tcp(_)));
/// let v6: Address = "[::1]:6000".parse().unwrap();
/// assert_eq!(v6.to_string(), "[::1]:6000");
/// let path: Address = "/tmp/app.sock".parse().unwrap();
/// assert!(matches!(path, Address::Unix(_)));
/// let name: Address = "@app".parse().unwrap();
/// assert_eq!(name, Address::Abstract(b"app".to_vec()));
/// assert_eq!(name.to_string(), "@app");
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
        if s.is_empty() {
            return Err(Error::with_message(
                ErrorKind::InvalidInput,
                "empty address",
            ));
        }
        if let Some(name) = s.strip_prefix('\0').or_else(|| s.strip_prefix('@')) {
            return Ok(Address::Abstract(name.as_bytes().to_vec()));
        }
        if s.contains('/') {
            return Ok(Address::Unix(PathBuf::from(s)));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Address::Tcp(addr));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                let addr = s
                    .to_socket_addrs()
                    .map_err(|e| {
                        Error::with_source(
                            ErrorKind::InvalidInput,
                            format!("cannot resolve {host:?}"),
                            e,
                        )
                    })?
                    .next()
                    .ok_or_else(|| {
                        Error::with_message(
                            ErrorKind::InvalidInput,
                            format!("{host:?} has no address"),
                        )
                    })?;
                Ok(Address::Tcp(addr))
            }
            _ => Ok(Address::Unix(PathBuf::from(s))),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "{}", path.display()),
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
    /// # Errors
    /// `InvalidInput` for an empty string or a host name that does not resolve.
    fn to_address(&self) -> Result<Address>;
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
}

impl ToAddress for String {
    fn to_address(&self) -> Result<Address> {
        self.parse()
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
}
