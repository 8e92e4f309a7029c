//! Best-effort mDNS announcement of every online device as `_ethoscope._tcp.local.`, with the
//! firmware's TXT properties (`version`, `id_page`, `id`).
//!
//! Multicast on loopback rarely works and the mDNS library joins the group on every interface of
//! the machine, so this is off unless asked for; any failure is logged and ignored.

use std::collections::BTreeMap;
use std::sync::Arc;

use mdns_sd::{ServiceDaemon, ServiceInfo};
use tokio_util::sync::CancellationToken;

use crate::device::SimDevice;

/// The service type ethoscopes announce.
pub const SERVICE_TYPE: &str = "_ethoscope._tcp.local.";

/// The announcement of one device: instance `<name>-<id>`, host `<name>.local.`, its address and
/// HTTP port.
pub fn service_info(dev: &SimDevice) -> Result<ServiceInfo, mdns_sd::Error> {
    let name = dev.name().to_ascii_lowercase();
    let props = [("version", "0.2"), ("id_page", "/id"), ("id", dev.id())];
    ServiceInfo::new(
        SERVICE_TYPE,
        &format!("{name}-{}", dev.id()),
        &format!("{name}.local."),
        dev.http_addr().ip(),
        dev.http_addr().port(),
        &props[..],
    )
}

/// Announces devices while they are online.
pub struct Announcer {
    daemon: ServiceDaemon,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Announcer")
    }
}

impl Announcer {
    /// Starts announcing; `None` (with a warning) when mDNS is unavailable.
    pub fn start(devices: &[Arc<SimDevice>], shutdown: CancellationToken) -> Option<Announcer> {
        let daemon = match ServiceDaemon::new() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("mDNS announcements unavailable: {e}");
                return None;
            }
        };
        let mut infos = BTreeMap::new();
        for dev in devices {
            match service_info(dev) {
                Ok(info) => {
                    infos.insert(dev.name().to_string(), (dev.clone(), info));
                }
                Err(e) => tracing::warn!(device = %dev.name(), "no mDNS announcement: {e}"),
            }
        }
        for (dev, info) in infos.into_values() {
            let daemon = daemon.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut control = dev.subscribe();
                let mut registered = false;
                loop {
                    let online = !control.borrow_and_update().offline;
                    if online && !registered {
                        if let Err(e) = daemon.register(info.clone()) {
                            tracing::warn!(device = %dev.name(), "mDNS register failed: {e}");
                        }
                        registered = true;
                    } else if !online && registered {
                        let _ = daemon.unregister(info.get_fullname());
                        registered = false;
                    }
                    tokio::select! {
                        r = control.changed() => if r.is_err() { break },
                        _ = shutdown.cancelled() => break,
                    }
                }
            });
        }
        Some(Announcer { daemon })
    }

    /// Stops announcing.
    pub fn stop(self) {
        let _ = self.daemon.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DbKind, DeviceSpec, Role};
    use crate::experiment::Schedule;
    use crate::identity::fleet_identities;

    #[test]
    fn announcement_matches_the_firmware() {
        let identity = fleet_identities(1, std::net::Ipv4Addr::new(127, 0, 0, 10), 7, 1)
            .unwrap()
            .remove(0);
        let id = identity.id.clone();
        let dev = SimDevice::new(
            DeviceSpec {
                identity,
                role: Role::Tracker(DbKind::Sqlite),
                faults: vec![],
                schedule: Schedule::default(),
                user: "u".into(),
                location: "l".into(),
            },
            std::path::PathBuf::from("/nonexistent"),
            "127.0.0.10:9000".parse().unwrap(),
            None,
            CancellationToken::new(),
        );
        let info = service_info(&dev).unwrap();
        assert_eq!(info.get_type(), SERVICE_TYPE);
        assert_eq!(
            info.get_fullname(),
            format!("ethoscope_007-{id}.{SERVICE_TYPE}")
        );
        assert_eq!(info.get_port(), 9000);
        assert_eq!(info.get_property_val_str("id"), Some(id.as_str()));
        assert_eq!(info.get_property_val_str("id_page"), Some("/id"));
        assert!(info
            .get_addresses()
            .iter()
            .any(|a| a.to_string() == "127.0.0.10"));
    }
}
