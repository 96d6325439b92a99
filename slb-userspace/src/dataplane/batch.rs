//! Reading a whole hash map with few system calls (`BPF_MAP_LOOKUP_BATCH`,
//! Linux 5.6). The connection table holds up to millions of entries, and
//! a walk by next-key and lookup takes two system calls per entry: about
//! a second per 300,000 entries here, during which the agent's main loop
//! answers nothing (status, metrics, health changes, the `wlc` recount
//! every 2 s). A batch read copies thousands of entries per call. aya has
//! no batch operations, hence this one system call by hand.
use std::os::fd::{AsRawFd, BorrowedFd};

/// `BPF_MAP_LOOKUP_BATCH` in `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries per call.
const BATCH: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Why a batch walk stopped.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The kernel refused the first call (no batch support for this map
    /// or kernel): nothing was visited, a walk by key can take over.
    #[error("batch lookup not available: {0}")]
    Unsupported(std::io::Error),
    /// A later call failed: the entries before it were visited.
    #[error("batch lookup failed part way: {0}")]
    Failed(std::io::Error),
}

/// Calls `f` with every entry of the (non-per-CPU) hash map `fd`, whose
/// keys and values are `K` and `V`. As with any walk of a live map,
/// entries added or removed meanwhile may or may not be seen.
pub fn for_each<K: aya::Pod, V: aya::Pod>(
    fd: BorrowedFd<'_>,
    mut f: impl FnMut(&K, &V),
) -> Result<(), BatchError> {
    // SAFETY: `Pod` types are plain data: all-zero bytes are a value.
    let mut keys: Vec<K> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut values: Vec<V> = vec![unsafe { std::mem::zeroed() }; BATCH];
    // The position between calls, opaque to us (a bucket index for hash
    // maps, 4 bytes; room for 8).
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                std::ptr::addr_of!(token_in) as u64
            },
            out_batch: std::ptr::addr_of_mut!(token_out) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: fd.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: `attr` is the `batch` layout of `union bpf_attr`; the
        // kernel writes at most `count` keys and values into buffers of
        // that many `K` and `V` (the map's key and value sizes), the token
        // into `token_out`, and the number written into `attr.count`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                std::ptr::addr_of_mut!(attr),
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let error = (rc < 0).then(std::io::Error::last_os_error);
        let n = (attr.count as usize).min(BATCH);
        // Entries come with the last batch too (ENOENT: nothing after).
        if error.is_none() || error.as_ref().and_then(|e| e.raw_os_error()) == Some(libc::ENOENT) {
            for (k, v) in keys.iter().zip(&values).take(n) {
                f(k, v);
            }
        }
        match error {
            None => {
                token_in = token_out;
                first = false;
            }
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Some(e) if first => return Err(BatchError::Unsupported(e)),
            Some(e) => return Err(BatchError::Failed(e)),
        }
    }
}
