//! Loading the object with pinned maps, adopting compatible pinned state.
use super::{bpffs, map_err, object, DataplaneError};
use aya::{
    maps::{
        lpm_trie::LpmTrie, Array, DevMapHash, HashMap, MapData, MapInfo, PerCpuArray, ProgramArray,
    },
    programs::Xdp,
    Ebpf, EbpfLoader,
};
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};
use slb_common::{
    limits::{LAYOUT_VERSION, MAX_LISTENERS, RINGS_PER_LISTENER, RING_CHUNK},
    AclKey, Addr, Backend, DestSlot, Listener, RingChunk, Settings, SnatPool, Stats, VipKey,
};
use std::{
    fs::File,
    path::{Path, PathBuf},
};
use tracing::{info, warn};

/// Every map of the object (each pinned under its name).
const MAP_NAMES: [&str; 22] = [
    "DESTS",
    "LISTENERS",
    "RING",
    "BACKENDS",
    "FLOWS",
    "REVERSE",
    "SNAT_POOL",
    "SNAT_V4",
    "SNAT_V6",
    "TX_PORTS",
    "LISTENER_STATS",
    "BACKEND_STATS",
    "GLOBAL_STATS",
    "VERSION",
    "WRR_POS",
    "ACTIVE",
    "PERSIST",
    "ACL",
    "SETTINGS",
    "JUMP",
    "BACKEND_NH",
    "CLOCK",
];

/// Sizes fixed at load time, from the `[agent]` section.
#[derive(Clone, Debug)]
pub struct DataplaneOptions {
    /// Directory on a bpffs where maps are pinned (mounted if needed).
    pub pin_dir: PathBuf,
    pub flow_table_size: u32,
    /// Lookup-table slots per listener (Maglev table size).
    pub ring_size: u32,
}

/// The loaded program and its maps.
pub struct Dataplane {
    pub(super) ebpf: Ebpf,
    pub(super) pin_dir: PathBuf,
    pub(super) ring_size: u32,
    /// Pinned maps existed and were adopted (flows survive a restart).
    pub adopted: bool,
    /// False when the pins live on a bpffs this process mounted in its
    /// own mount namespace: they vanish when it exits, and the links
    /// pinned there detach, whatever the stop leaves.
    pub pins_outlive_process: bool,
    /// The fast path's way to the slow path (`bpf_tail_call`).
    pub(super) jump: ProgramArray<MapData>,
    /// Whether `jump` holds this run's slow path (see
    /// [`Dataplane::arm_slow_path`]).
    pub(super) slow_armed: bool,
    pub(super) dests: Array<MapData, DestSlot>,
    /// What `dests` holds (read once at load, kept by every write and
    /// undo): a change compares against it instead of reading all
    /// `DEST_SLOTS` slots back, a system call each, on every apply.
    pub(super) dests_now: Vec<DestSlot>,
    pub(super) listeners: HashMap<MapData, VipKey, Listener>,
    /// What `listeners` holds (kept like `dests_now`).
    pub(super) listeners_now: std::collections::BTreeMap<VipKey, Listener>,
    pub(super) ring: Array<MapData, RingChunk>,
    pub(super) backends: Array<MapData, Backend>,
    /// What `backends` holds (kept like `dests_now`; the program only
    /// reads the map).
    pub(super) backends_now: Vec<Backend>,
    /// The connection and reply tables, for walks on any thread.
    pub(super) tables: std::sync::Arc<super::connections::FlowTables>,
    pub(super) snat_pool: Array<MapData, SnatPool>,
    pub(super) snat_v4: Array<MapData, Addr>,
    pub(super) snat_v6: Array<MapData, Addr>,
    pub(super) tx_ports: DevMapHash<MapData>,
    pub(super) listener_stats: PerCpuArray<MapData, Stats>,
    pub(super) backend_stats: PerCpuArray<MapData, Stats>,
    pub(super) global_stats: PerCpuArray<MapData, u64>,
    pub(super) active: Array<MapData, u32>,
    pub(super) acl: LpmTrie<MapData, AclKey, u32>,
    pub(super) settings: Array<MapData, Settings>,
    pub(super) clock: Array<MapData, u64>,
    /// `clock` again, for the thread that advances it (`clock::ClockTicker`).
    pub(super) clock_fd: std::os::fd::OwnedFd,
    /// That thread, once started ([`Dataplane::start_clock`]).
    pub(super) ticker: Option<super::clock::ClockTicker>,
    pub(super) links: Vec<super::attach::Link>,
    /// What configuration writes replaced, while a checkpoint is open
    /// (see `journal`).
    pub(super) journal: Option<Vec<super::journal::Undo>>,
    /// The maps were pinned by this load and nothing has run with them
    /// yet ([`Dataplane::keep_pins`] not called): dropped so, they are
    /// unpinned. A start that fails before it attached must not leave
    /// pins that the next start would adopt as a previous run's state
    /// (and refuse outright if `flow_table_size` changed meanwhile).
    pub(super) uncommitted: bool,
    /// Exclusive lock on the pin directory, held while this process owns
    /// the pinned state (released when the process exits).
    _lock: Flock<File>,
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        // Before the fields, so the pin directory's lock is still held: no
        // other agent can have adopted these pins meanwhile.
        if self.uncommitted {
            match self.unpin() {
                Ok(()) => {
                    info!(pin_path = %self.pin_dir.display(), "pinned maps of a failed start removed")
                }
                Err(e) => {
                    warn!(pin_path = %self.pin_dir.display(), error = %e, "removing the pinned maps of a failed start")
                }
            }
        }
    }
}

/// Takes the exclusive lock on the pin directory. The pinned maps and
/// links are shared by every process that opens them, so a second agent
/// would overwrite the first one's tables with its own view of health
/// (every backend up until probed). flock on the directory itself: a
/// bpffs holds no regular files, and the lock goes away with the process,
/// however it ends.
fn lock_pin_dir(dir: &Path) -> Result<Flock<File>, DataplaneError> {
    let file = File::open(dir).map_err(|e| DataplaneError::PinPath {
        path: dir.to_owned(),
        reason: format!("open: {e}"),
    })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
        Errno::EWOULDBLOCK => DataplaneError::Busy {
            path: dir.to_owned(),
        },
        e => DataplaneError::PinPath {
            path: dir.to_owned(),
            reason: format!("lock: {e}"),
        },
    })
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(DataplaneError::Missing(name))?;
    T::try_from(map).map_err(map_err(name))
}

/// A second descriptor of map `name` (aya's typed maps do not lend theirs).
fn dup_fd(ebpf: &Ebpf, name: &'static str) -> Result<std::os::fd::OwnedFd, DataplaneError> {
    use std::os::fd::AsFd;
    let data = match ebpf.map(name).ok_or(DataplaneError::Missing(name))? {
        aya::maps::Map::LruHashMap(m) | aya::maps::Map::HashMap(m) | aya::maps::Map::Array(m) => m,
        _ => return Err(DataplaneError::Missing(name)),
    };
    data.fd().as_fd().try_clone_to_owned().map_err(|e| {
        map_err(name)(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "dup",
            io_error: e,
        }))
    })
}

/// Refuses to adopt pinned maps whose sizes differ from what this
/// configuration needs: the kernel would happily hand them over and the
/// program would then index past their end or mis-size the flow table.
/// `setting` is the `[agent]` key that sizes the map, `per_unit` how many
/// entries one unit of it takes, so the error names the operator's value.
fn check_pinned(
    dir: &Path,
    name: &'static str,
    want: u32,
    setting: &'static str,
    per_unit: u32,
) -> Result<bool, DataplaneError> {
    let path = dir.join(name);
    if !path.exists() {
        return Ok(false);
    }
    let info = MapInfo::from_pin(&path).map_err(|e| DataplaneError::PinnedMap {
        path: dir.to_owned(),
        name,
        reason: e.to_string(),
    })?;
    if info.max_entries() != want {
        return Err(DataplaneError::Incompatible {
            path: dir.to_owned(),
            setting,
            pinned: info.max_entries() / per_unit,
            wanted: want / per_unit,
        });
    }
    Ok(true)
}

impl Dataplane {
    /// Loads the XDP object. Maps already pinned under `pin_dir` are adopted
    /// (their flows keep working) when their layout version and sizes match.
    pub fn load(opts: &DataplaneOptions) -> Result<Self, DataplaneError> {
        let bytes = object::lb_bytes();
        if bytes.is_empty() {
            return Err(DataplaneError::NotBuilt);
        }
        let pin_fs = bpffs::ensure(&opts.pin_dir)?;
        // Before anything pinned is opened, let alone written.
        let lock = lock_pin_dir(&opts.pin_dir)?;
        let ring_entries = MAX_LISTENERS * RINGS_PER_LISTENER / RING_CHUNK * opts.ring_size;
        let flows = |name| {
            check_pinned(
                &opts.pin_dir,
                name,
                opts.flow_table_size,
                "agent.flow_table_size",
                1,
            )
        };
        let adopted = flows("FLOWS")?;
        flows("REVERSE")?;
        flows("PERSIST")?;
        check_pinned(
            &opts.pin_dir,
            "RING",
            ring_entries,
            "agent.maglev_table_size",
            MAX_LISTENERS * RINGS_PER_LISTENER / RING_CHUNK,
        )?;

        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&opts.pin_dir)
            .map_max_entries("FLOWS", opts.flow_table_size)
            .map_max_entries("REVERSE", opts.flow_table_size)
            .map_max_entries("PERSIST", opts.flow_table_size)
            .map_max_entries("RING", ring_entries)
            .load(bytes)?;

        let mut version: Array<MapData, u32> = take(&mut ebpf, "VERSION")?;
        let found = version.get(&0, 0).map_err(map_err("VERSION"))?;
        if found == 0 {
            version
                .set(0, LAYOUT_VERSION, 0)
                .map_err(map_err("VERSION"))?;
        } else if found != LAYOUT_VERSION {
            return Err(DataplaneError::LayoutVersion {
                path: opts.pin_dir.clone(),
                found,
                ours: LAYOUT_VERSION,
            });
        }

        // The slow path first: the fast path tail-calls it through JUMP,
        // which must hold it before the fast path sees a packet.
        for name in [object::PROG_SLOW, object::PROG_LB] {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(DataplaneError::Missing(name))?
                .try_into()
                .map_err(|source| DataplaneError::Program { name, source })?;
            program
                .load()
                .map_err(|source| DataplaneError::Program { name, source })?;
        }
        let jump: ProgramArray<MapData> = take(&mut ebpf, "JUMP")?;
        // A handle of BACKENDS of its own: the walks only read it.
        let backends_read = aya::maps::MapData::from_fd(dup_fd(&ebpf, "BACKENDS")?)
            .and_then(aya::maps::Map::from_map_data)
            .and_then(TryFrom::try_from)
            .map_err(map_err("BACKENDS"))?;
        // Before `take` removes them from `ebpf`.
        let (flows_fd, reverse_fd) = (dup_fd(&ebpf, "FLOWS")?, dup_fd(&ebpf, "REVERSE")?);
        let clock_fd = dup_fd(&ebpf, "CLOCK")?;
        let tables = std::sync::Arc::new(super::connections::FlowTables::new(
            take(&mut ebpf, "FLOWS")?,
            take(&mut ebpf, "REVERSE")?,
            backends_read,
            flows_fd,
            reverse_fd,
        ));

        let dests: Array<MapData, DestSlot> = take(&mut ebpf, "DESTS")?;
        let dests_now = dests
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err("DESTS"))?;
        let listeners: HashMap<MapData, VipKey, Listener> = take(&mut ebpf, "LISTENERS")?;
        let listeners_now = listeners
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("LISTENERS"))?;
        let backends: Array<MapData, Backend> = take(&mut ebpf, "BACKENDS")?;
        let backends_now = backends
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("BACKENDS"))?;
        let mut dp = Dataplane {
            jump,
            slow_armed: false,
            dests,
            dests_now,
            listeners,
            listeners_now,
            ring: take(&mut ebpf, "RING")?,
            backends,
            backends_now,
            tables,
            snat_pool: take(&mut ebpf, "SNAT_POOL")?,
            snat_v4: take(&mut ebpf, "SNAT_V4")?,
            snat_v6: take(&mut ebpf, "SNAT_V6")?,
            tx_ports: take(&mut ebpf, "TX_PORTS")?,
            listener_stats: take(&mut ebpf, "LISTENER_STATS")?,
            backend_stats: take(&mut ebpf, "BACKEND_STATS")?,
            global_stats: take(&mut ebpf, "GLOBAL_STATS")?,
            active: take(&mut ebpf, "ACTIVE")?,
            acl: take(&mut ebpf, "ACL")?,
            settings: take(&mut ebpf, "SETTINGS")?,
            clock: take(&mut ebpf, "CLOCK")?,
            clock_fd,
            ticker: None,
            links: Vec::new(),
            journal: None,
            uncommitted: !adopted,
            _lock: lock,
            ebpf,
            pin_dir: opts.pin_dir.clone(),
            ring_size: opts.ring_size,
            adopted,
            pins_outlive_process: pin_fs != bpffs::PinFs::MountedPrivately,
        };
        // Adopted links still run the previous fast path, which
        // tail-calls through the same pinned JUMP: its slow path stays in
        // place until this start has attached its new interfaces
        // (`attach_all`), so a start that fails there leaves the previous
        // run's fast and slow paths together, not the old fast path with
        // this build's slow path.
        if !adopted {
            dp.arm_slow_path()?;
        }
        Ok(dp)
    }

    /// Puts this run's slow path into JUMP (once): before a packet can
    /// reach this run's fast path on a fresh start, before the pinned
    /// links are taken over on an adopting one.
    pub(super) fn arm_slow_path(&mut self) -> Result<(), DataplaneError> {
        if self.slow_armed {
            return Ok(());
        }
        let slow: &Xdp = self
            .ebpf
            .program(object::PROG_SLOW)
            .ok_or(DataplaneError::Missing(object::PROG_SLOW))?
            .try_into()
            .map_err(|source| DataplaneError::Program {
                name: object::PROG_SLOW,
                source,
            })?;
        let fd = slow.fd().map_err(|source| DataplaneError::Program {
            name: object::PROG_SLOW,
            source,
        })?;
        self.jump.set(0, fd, 0).map_err(map_err("JUMP"))?;
        self.slow_armed = true;
        Ok(())
    }

    /// The loaded load-balancing program (for tests through
    /// `BPF_PROG_TEST_RUN`).
    pub fn program(&self) -> Result<&Xdp, DataplaneError> {
        self.ebpf
            .program(object::PROG_LB)
            .ok_or(DataplaneError::Missing(object::PROG_LB))?
            .try_into()
            .map_err(|source| DataplaneError::Program {
                name: object::PROG_LB,
                source,
            })
    }

    /// The start went through: from now on the pinned state is kept on
    /// drop (a stop says whether to keep it, a crash always does).
    pub fn keep_pins(&mut self) {
        self.uncommitted = false;
    }

    pub fn ring_size(&self) -> u32 {
        self.ring_size
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Removes the pinned maps, so the next start begins with empty tables.
    /// The maps themselves live on while this process holds them. Only our
    /// own pins are touched: a fresh bpffs also holds kernel files such as
    /// `maps.debug`. Once done, dropping the dataplane has nothing left to
    /// remove (see `uncommitted`).
    pub fn unpin(&mut self) -> std::io::Result<()> {
        for name in MAP_NAMES {
            match std::fs::remove_file(self.pin_dir.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.uncommitted = false;
        Ok(())
    }
}
