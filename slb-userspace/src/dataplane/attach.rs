//! Attaching the program to interfaces and the redirect device map.
use super::{map_err, object, Dataplane, DataplaneError};
use aya::programs::{xdp::XdpLinkId, Xdp, XdpMode};
use tracing::{info, warn};

/// How the program is attached (`agent.xdp_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    Native,
    Skb,
    /// Native, falling back to skb (generic) mode where the driver has no
    /// XDP support.
    Auto,
}

/// Where the program ended up attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    /// "native" or "skb".
    pub mode: &'static str,
}

pub(super) struct Link {
    pub(super) id: XdpLinkId,
    pub(super) attachment: Attachment,
}

pub(crate) fn ifindex(iface: &str) -> Result<u32, DataplaneError> {
    nix::net::if_::if_nametoindex(iface).map_err(|e| DataplaneError::Interface {
        name: iface.to_owned(),
        reason: format!("no such interface ({e})"),
    })
}

impl Dataplane {
    fn xdp(&mut self) -> Result<&mut Xdp, DataplaneError> {
        self.ebpf
            .program_mut(object::PROG_LB)
            .ok_or(DataplaneError::Missing(object::PROG_LB))?
            .try_into()
            .map_err(|source| DataplaneError::Program {
                name: object::PROG_LB,
                source,
            })
    }

    /// Lets the program redirect to device `index`.
    pub fn add_tx_port(&mut self, index: u32) -> Result<(), DataplaneError> {
        self.tx_ports
            .insert(index, index, None, 0)
            .map_err(|e| DataplaneError::Interface {
                name: format!("#{index}"),
                reason: format!(
                    "adding to TX_PORTS: {e}: {}",
                    std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                ),
            })
    }

    /// Attaches the program to `iface` and lets it redirect there.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<Attachment, DataplaneError> {
        let index = ifindex(iface)?;
        self.add_tx_port(index)?;
        let fail = |e: aya::programs::ProgramError| DataplaneError::Interface {
            name: iface.to_owned(),
            reason: format!("attaching XDP: {e}"),
        };
        let prog = self.xdp()?;
        let (id, mode_name) = match mode {
            AttachMode::Native => (
                prog.attach_to_if_index(index, XdpMode::Driver)
                    .map_err(fail)?,
                "native",
            ),
            AttachMode::Skb => (
                prog.attach_to_if_index(index, XdpMode::Skb).map_err(fail)?,
                "skb",
            ),
            AttachMode::Auto => match prog.attach_to_if_index(index, XdpMode::Driver) {
                Ok(id) => (id, "native"),
                Err(e) => {
                    warn!(iface, error = %e, "native XDP not available, falling back to skb mode");
                    (
                        prog.attach_to_if_index(index, XdpMode::Skb).map_err(fail)?,
                        "skb",
                    )
                }
            },
        };
        let attachment = Attachment {
            iface: iface.to_owned(),
            ifindex: index,
            mode: mode_name,
        };
        info!(iface, mode = mode_name, "XDP attached");
        self.links.push(Link {
            id,
            attachment: attachment.clone(),
        });
        Ok(attachment)
    }

    pub fn attachments(&self) -> Vec<Attachment> {
        self.links.iter().map(|l| l.attachment.clone()).collect()
    }

    /// Detaches from every interface (in reverse order of attaching).
    pub fn detach_all(&mut self) {
        let links = std::mem::take(&mut self.links);
        for link in links.into_iter().rev() {
            let iface = link.attachment.iface.clone();
            match self.xdp().and_then(|p| {
                p.detach(link.id).map_err(|source| DataplaneError::Program {
                    name: object::PROG_LB,
                    source,
                })
            }) {
                Ok(()) => info!(iface, "XDP detached"),
                Err(e) => warn!(iface, error = %e, "detaching XDP failed"),
            }
            if let Err(e) = self
                .tx_ports
                .remove(link.attachment.ifindex)
                .map_err(map_err("TX_PORTS"))
            {
                warn!(iface, error = %e, "removing from TX_PORTS failed");
            }
        }
    }
}
