//! What the dataplane's maps take of the kernel's memory. Their sizes are
//! fixed at load (`flow_table_size`, `maglev_table_size`, the limits in
//! `slb-common`), so an operator sizing a machine needs the figure the
//! kernel accounts, not an estimate: it is read from each map's
//! `/proc/self/fdinfo` entry (`memlock`, what the kernel charges the map).
use super::{object, Dataplane, DataplaneError};
use aya::maps::MapInfo;
use std::{
    collections::BTreeSet,
    os::fd::{AsFd, AsRawFd},
};

/// One map of the loaded programs and the bytes the kernel charges for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapMemory {
    pub name: String,
    pub bytes: u64,
}

impl Dataplane {
    /// Every map the load balancer's programs use, largest first.
    pub fn map_memory(&self) -> Result<Vec<MapMemory>, DataplaneError> {
        let mut ids = BTreeSet::new();
        for name in [object::PROG_LB, object::PROG_SLOW] {
            let prog = self
                .ebpf
                .program(name)
                .ok_or(DataplaneError::Missing(name))?;
            let info = prog
                .info()
                .map_err(|source| DataplaneError::Program { name, source })?;
            let map_ids = info
                .map_ids()
                .map_err(|source| DataplaneError::Program { name, source })?;
            ids.extend(map_ids.unwrap_or_default());
        }
        let mut out = Vec::new();
        for id in ids {
            let info = MapInfo::from_id(id).map_err(|e| DataplaneError::MapInfo {
                id,
                reason: e.to_string(),
            })?;
            let fd = info.fd().map_err(|e| DataplaneError::MapInfo {
                id,
                reason: e.to_string(),
            })?;
            let fdinfo =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd()))
                    .map_err(|e| DataplaneError::MapInfo {
                        id,
                        reason: e.to_string(),
                    })?;
            out.push(MapMemory {
                name: info.name_as_str().unwrap_or("?").to_owned(),
                bytes: memlock(&fdinfo).unwrap_or(0),
            });
        }
        out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        Ok(out)
    }
}

/// The `memlock:` field of a map's fdinfo.
fn memlock(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `bytes` for a person: MiB with one decimal from 1 MiB up, else KiB.
pub fn human_bytes(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_is_read_from_fdinfo() {
        let fdinfo = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t9\n\
                      key_size:\t40\nvalue_size:\t64\nmax_entries:\t1048576\nmap_flags:\t0x0\n\
                      map_extra:\t0x0\nmemlock:\t201523200\nmap_id:\t20\nfrozen:\t0\n";
        assert_eq!(memlock(fdinfo), Some(201_523_200));
        assert_eq!(memlock("pos:\t0\n"), None);
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(201_523_200), "192.2 MiB");
        assert_eq!(human_bytes(4096), "4 KiB");
        assert_eq!(human_bytes(1), "1 KiB");
    }
}
