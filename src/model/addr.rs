//! Address patterns, as the filter (`src:`/`dst:`) and middlebox declarations write them:
//! `10.0.0.0/8`, `:5432`, `[::1]:22`, `192.168.1.10:443`, a Unix path `/run/x.sock` or `@abstract`.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::Endpoint;

/// Which endpoints a pattern takes: a network (CIDR; a bare address is its /32 or /128), a
/// port, or a Unix path fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrPat {
    net: Option<IpNet>,
    port: Option<u16>,
    path: Option<String>,
}

impl AddrPat {
    pub fn matches(&self, ep: &Endpoint) -> bool {
        match ep {
            Endpoint::Inet(a) => {
                self.path.is_none()
                    && self.port.is_none_or(|p| p == a.port())
                    // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
                    && self.net.is_none_or(|net| net.contains(&a.ip().to_canonical()))
            }
            Endpoint::Unix(Some(path)) => self
                .path
                .as_ref()
                .is_some_and(|want| path.contains(want.as_str())),
            _ => false,
        }
    }
}

/// Parses a pattern; `None` when it is none of the forms above.
pub fn parse(v: &str) -> Option<AddrPat> {
    let none = AddrPat {
        net: None,
        port: None,
        path: None,
    };
    if v.starts_with('/') || v.starts_with('@') {
        return Some(AddrPat {
            path: Some(v.to_string()),
            ..none
        });
    }
    if let Some(port) = v.strip_prefix(':') {
        return Some(AddrPat {
            port: Some(port.parse().ok()?),
            ..none
        });
    }
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        (inside, port)
    } else if v.matches(':').count() == 1 {
        let (h, p) = v.split_once(':')?;
        (h, Some(p.parse().ok()?))
    } else {
        (v, None)
    };
    let net = if host.contains('/') {
        host.parse::<IpNet>().ok()?
    } else {
        IpNet::from(host.parse::<IpAddr>().ok()?)
    };
    Some(AddrPat {
        net: Some(net),
        port,
        path: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        Endpoint::Inet(s.parse().unwrap())
    }

    #[test]
    fn networks_ports_and_paths() {
        let p = parse("10.0.0.0/8").unwrap();
        assert!(p.matches(&ep("10.1.2.3:5")) && !p.matches(&ep("11.0.0.1:5")));
        // A v4-mapped peer is its IPv4 address.
        assert!(p.matches(&ep("[::ffff:10.0.0.1]:80")));
        let p = parse("[::1]:22").unwrap();
        assert!(p.matches(&ep("[::1]:22")) && !p.matches(&ep("[::1]:23")));
        assert!(parse(":5432").unwrap().matches(&ep("1.2.3.4:5432")));
        assert!(parse("0.0.0.0/0").unwrap().matches(&ep("9.9.9.9:1")));
        let unix = parse("/run/pg").unwrap();
        assert!(unix.matches(&Endpoint::Unix(Some("/run/pg.sock".into()))));
        for bad in [
            "10.0.0.0/33",
            "::1/129",
            "nonsense",
            ":99999",
            "[::1",
            "1.2.3.4:x",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
