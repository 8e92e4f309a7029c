//! Helpers shared by the binary's lab tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etho_sim::experiment::Schedule;
use etho_sim::identity::fleet_identities;
use etho_sim::{DeviceSpec, Role};

/// Devices with `roles` running one endless experiment each, from `127.<second>.<x>.10` on,
/// where `x` depends on the process id so concurrent test runs do not collide.
pub fn lab_devices(roles: &[Role], second: u8, seed: u64, user: &str) -> Vec<DeviceSpec> {
    let third = (std::process::id() % 200) as u8 + 20;
    fleet_identities(
        roles.len() as u32,
        Ipv4Addr::new(127, second, third, 10),
        1,
        seed,
    )
    .unwrap()
    .into_iter()
    .zip(roles)
    .map(|(identity, role)| DeviceSpec {
        identity,
        role: *role,
        faults: vec![],
        schedule: Schedule {
            start_delay: Duration::ZERO,
            run_for: None,
            pause_for: Duration::ZERO,
        },
        user: user.into(),
        location: "Bench".into(),
    })
    .collect()
}

/// Every regular file below `root`, relative path → bytes.
pub fn files_below(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}
