//! mDNS discovery: ethoscopes announce `_ethoscope._tcp.local.` (port 9000); every resolved
//! announcement becomes a poll target.
//!
//! Best effort: if multicast does not work here (no interface, no permission), discovery goes on
//! with the other sources and the failure is logged once. Off unless configured, because the
//! mDNS library joins the multicast group on every interface of the machine.

use std::net::IpAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::registry::DeviceRegistry;
use crate::target::{Source, Target};

/// The service type ethoscopes announce.
pub const SERVICE_TYPE: &str = "_ethoscope._tcp.local.";

/// Targets announced by one resolved service: each usable address with the announced port.
pub fn targets_of(addresses: impl IntoIterator<Item = IpAddr>, port: u16) -> Vec<Target> {
    let mut out: Vec<Target> = addresses
        .into_iter()
        .filter(|ip| !ip.is_unspecified() && !ip.is_multicast())
        // Link-local IPv6 needs a scope id the registry does not keep.
        .filter(|ip| match ip {
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            IpAddr::V4(_) => true,
        })
        .filter(|_| port != 0)
        .map(|ip| Target::ip(ip, port))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Starts browsing in the background until `token` is cancelled.
pub fn spawn_browser(registry: Arc<DeviceRegistry>, token: CancellationToken) {
    let daemon = match mdns_sd::ServiceDaemon::new() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("mDNS discovery unavailable: {e}");
            return;
        }
    };
    let events = match daemon.browse(SERVICE_TYPE) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!("mDNS discovery unavailable: {e}");
            let _ = daemon.shutdown();
            return;
        }
    };
    tracing::info!("browsing mDNS for {SERVICE_TYPE}");
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                e = events.recv_async() => e,
                _ = token.cancelled() => break,
            };
            match event {
                Ok(mdns_sd::ServiceEvent::ServiceResolved(svc)) => {
                    let addrs = svc.get_addresses().iter().map(|a| a.to_ip_addr());
                    for t in targets_of(addrs, svc.get_port()) {
                        if let Err(e) = registry.add_target(t, Source::Mdns) {
                            tracing::debug!("mDNS announcement ignored: {e}");
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = daemon.shutdown();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_addresses_become_targets() {
        let ips: Vec<IpAddr> = vec![
            "127.0.0.10".parse().unwrap(),
            "0.0.0.0".parse().unwrap(),
            "224.0.0.251".parse().unwrap(),
            "fe80::1".parse().unwrap(),
            "127.0.0.10".parse().unwrap(),
        ];
        let t = targets_of(ips.clone(), 9000);
        assert_eq!(t, vec![Target::ip("127.0.0.10".parse().unwrap(), 9000)]);
        assert!(targets_of(ips, 0).is_empty());
    }
}
