//! Who a simulated device is: machine id, name and address.
//!
//! Real ethoscopes have a random 32-hex machine id, a name `ETHOSCOPE_NNN` and their own IP on the
//! lab network. The simulator derives ids from a seed (so a fleet is the same on every run and
//! tests can name devices in advance) and gives every device its own loopback address, so the node
//! sees distinct IPs exactly as in a lab; Linux routes all of 127.0.0.0/8 to the loopback
//! interface, so binding 127.0.0.x needs no setup.

use std::net::Ipv4Addr;

use rand::{Rng, SeedableRng};

/// The identity of one simulated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The device number, `NNN` in `ETHOSCOPE_NNN`.
    pub number: u32,
    /// 32 lower-case hex characters, like `/etc/machine-id`.
    pub id: String,
    /// `ETHOSCOPE_NNN`.
    pub name: String,
    /// The device's own loopback address.
    pub ip: Ipv4Addr,
}

/// `ETHOSCOPE_NNN` (at least three digits, as upstream names them).
pub fn device_name(number: u32) -> String {
    format!("ETHOSCOPE_{number:03}")
}

/// A deterministic 32-hex machine id for device `number` of the fleet seeded with `seed`.
pub fn machine_id(seed: u64, number: u32) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        seed ^ u64::from(number).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a fleet's identities could not be assigned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The first address is not a loopback address.
    #[error("first device address {0} is not a loopback address (127.0.0.0/8)")]
    NotLoopback(Ipv4Addr),
    /// The fleet would run past the end of 127.0.0.0/8.
    #[error("{count} devices starting at {first} do not fit in 127.0.0.0/8")]
    OutOfRange {
        /// First address asked for.
        first: Ipv4Addr,
        /// Number of devices asked for.
        count: u32,
    },
}

/// Identities of a fleet of `count` devices numbered from `first_number`, on consecutive loopback
/// addresses from `first_ip`.
pub fn fleet_identities(
    count: u32,
    first_ip: Ipv4Addr,
    first_number: u32,
    seed: u64,
) -> Result<Vec<Identity>, IdentityError> {
    if first_ip.octets()[0] != 127 {
        return Err(IdentityError::NotLoopback(first_ip));
    }
    let base = u32::from(first_ip);
    // 127.255.255.255 is the broadcast address of the block: keep the last device below it.
    let last_allowed = u32::from(Ipv4Addr::new(127, 255, 255, 254));
    (0..count)
        .map(|i| {
            let ip = base.checked_add(i).filter(|ip| *ip <= last_allowed).ok_or(
                IdentityError::OutOfRange {
                    first: first_ip,
                    count,
                },
            )?;
            let number = first_number + i;
            Ok(Identity {
                number,
                id: machine_id(seed, number),
                name: device_name(number),
                ip: Ipv4Addr::from(ip),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_distinct_and_stable() {
        let fleet = fleet_identities(50, Ipv4Addr::new(127, 0, 0, 10), 1, 7).unwrap();
        let mut ids: Vec<_> = fleet.iter().map(|d| d.id.clone()).collect();
        for id in &ids {
            assert!(etho_model::device::is_valid_machine_id(id), "{id}");
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 50);
        assert_eq!(machine_id(7, 3), fleet[2].id);
        assert_ne!(machine_id(8, 3), fleet[2].id);
    }

    #[test]
    fn names_and_addresses() {
        let fleet = fleet_identities(3, Ipv4Addr::new(127, 0, 0, 254), 9, 0).unwrap();
        assert_eq!(fleet[0].name, "ETHOSCOPE_009");
        assert_eq!(fleet[2].name, "ETHOSCOPE_011");
        assert_eq!(fleet[1].ip, Ipv4Addr::new(127, 0, 0, 255));
        assert_eq!(fleet[2].ip, Ipv4Addr::new(127, 0, 1, 0));
        assert_eq!(device_name(1234), "ETHOSCOPE_1234");
        assert!(fleet
            .iter()
            .all(|d| etho_model::device::is_valid_device_name(&d.name)));
    }

    #[test]
    fn refuses_non_loopback_and_overflow() {
        assert_eq!(
            fleet_identities(1, Ipv4Addr::new(192, 168, 1, 10), 1, 0),
            Err(IdentityError::NotLoopback(Ipv4Addr::new(192, 168, 1, 10)))
        );
        assert!(matches!(
            fleet_identities(3, Ipv4Addr::new(127, 255, 255, 253), 1, 0),
            Err(IdentityError::OutOfRange { .. })
        ));
        assert_eq!(
            fleet_identities(2, Ipv4Addr::new(127, 255, 255, 253), 1, 0)
                .unwrap()
                .len(),
            2
        );
    }
}
