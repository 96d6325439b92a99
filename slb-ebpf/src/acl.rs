//! Per-listener allow/deny lists, checked before a new flow is scheduled.
use crate::maps::ACL;
use aya_ebpf::maps::lpm_trie::Key;
use slb_common::{
    listener::{ACL_ALLOW, ACL_DENY},
    AclKey, Addr, Listener,
};

/// True when the listener's ACL lets `src` open a flow.
#[inline(never)]
pub fn admits(listener: &Listener, src: &Addr) -> bool {
    if listener.acl != ACL_ALLOW && listener.acl != ACL_DENY {
        return true;
    }
    let key = Key::new(
        160,
        AclKey {
            listener_id_be: listener.id.to_be(),
            addr: *src,
        },
    );
    let listed = ACL.get(&key).is_some();
    listed == (listener.acl == ACL_ALLOW)
}
