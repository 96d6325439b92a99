//! Attaching the program to interfaces, pinning the links so the program
//! keeps forwarding while no agent runs, and adopting pinned links on start.
use super::{map_err, object, Dataplane, DataplaneError};
use aya::programs::{
    links::{FdLink, PinnedLink},
    xdp::{XdpLink, XdpLinkId},
    ProgramError, Xdp, XdpMode,
};
use std::path::{Path, PathBuf};
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
    /// "native", "skb", or "adopted" (a pinned link of a previous run now
    /// runs this program).
    pub mode: &'static str,
}

/// `Attachment::mode` of a link taken over from a previous run.
const ADOPTED: &str = "adopted";

/// Pinned links are `<pin_path>/link_<interface>`.
const LINK_PIN_PREFIX: &str = "link_";

pub(super) struct Link {
    /// The bpf_link, pinned at `pin`. Closing it alone does not detach:
    /// the pin keeps the link (and the program) alive.
    fd: FdLink,
    pin: PathBuf,
    attachment: Attachment,
}

pub(crate) fn ifindex(iface: &str) -> Result<u32, DataplaneError> {
    nix::net::if_::if_nametoindex(iface).map_err(|e| DataplaneError::Interface {
        name: iface.to_owned(),
        reason: format!("no such interface ({e})"),
    })
}

/// `e` followed by its sources: aya's syscall errors name only the call,
/// the errno is their source.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Makes the link a previous run pinned at `pin` run `prog`. `None`: the
/// link is defunct (the kernel released it when its interface went away,
/// `ENOLINK`), its pin is removed, and the interface (a device of that
/// name created since) needs a link of its own.
fn take_over(prog: &mut Xdp, iface: &str, pin: &Path) -> Result<Option<XdpLinkId>, DataplaneError> {
    let fd: FdLink = PinnedLink::from_pin(pin)
        .map_err(|e| iface_err(iface, "opening the pinned link")(with_sources(&e)))?
        .into();
    let link =
        XdpLink::try_from(fd).map_err(|e| iface_err(iface, "pinned link")(with_sources(&e)))?;
    match prog.attach_to_link(link) {
        Ok(id) => Ok(Some(id)),
        Err(ProgramError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOLINK) => {
            warn!(
                iface,
                "the pinned link belonged to a device of that name that no longer exists \
                 (deleted or re-created since); attaching afresh"
            );
            std::fs::remove_file(pin).map_err(|e| {
                iface_err(iface, "removing the pinned link of a device that is gone")(e.to_string())
            })?;
            Ok(None)
        }
        Err(e) => Err(iface_err(iface, "taking over the pinned link")(
            with_sources(&e),
        )),
    }
}

fn iface_err(iface: &str, what: &str) -> impl FnOnce(String) -> DataplaneError {
    let name = iface.to_owned();
    let what = what.to_owned();
    move |e| DataplaneError::Interface {
        name,
        reason: format!("{what}: {e}"),
    }
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

    fn link_pin(&self, iface: &str) -> PathBuf {
        self.pin_dir.join(format!("{LINK_PIN_PREFIX}{iface}"))
    }

    /// The links pinned (by a previous run) on interfaces that `ifaces`
    /// does not name: (interface, pin).
    fn unlisted_link_pins(&self, ifaces: &[String]) -> std::io::Result<Vec<(String, PathBuf)>> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.pin_dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if let Some(iface) = name.strip_prefix(LINK_PIN_PREFIX) {
                if !ifaces.iter().any(|i| i == iface) {
                    found.push((iface.to_owned(), entry.path()));
                }
            }
        }
        Ok(found)
    }

    /// Detaches the links a previous run pinned on interfaces the
    /// configuration no longer names. Left pinned, the previous run's fast
    /// path would go on forwarding there for good, tail-calling this run's
    /// slow path with tables nobody keeps for that interface, and no stop
    /// (not even a plain one, which detaches only this run's links) would
    /// ever take it off.
    fn detach_unlisted(&mut self, ifaces: &[String]) {
        let stale = match self.unlisted_link_pins(ifaces) {
            Ok(stale) => stale,
            Err(e) => {
                warn!(pin_path = %self.pin_dir.display(), error = %e, "listing the pinned links failed");
                return;
            }
        };
        for (iface, pin) in stale {
            // The pin is the link's last reference (its agent is gone):
            // removing it detaches the program.
            if let Err(e) = std::fs::remove_file(&pin) {
                warn!(iface, error = %e, "removing the pinned link of an interface no longer configured failed");
                continue;
            }
            info!(iface, "XDP detached: the interface is no longer configured");
            // A device that is gone took its entry with it.
            let Ok(index) = ifindex(&iface) else {
                continue;
            };
            if let Err(e) = super::journal::optional(self.tx_ports.remove(index)) {
                warn!(iface, error = %e, "removing from TX_PORTS failed");
            }
        }
    }

    /// Attaches the program to every interface of `ifaces`: first where
    /// no link of a previous run is pinned, then taking over the pinned
    /// links. So a failure on a new interface happens before any running
    /// link was touched; the links this call attached afresh are detached
    /// again, and the previous run's links go on with their program.
    pub fn attach_all(
        &mut self,
        ifaces: &[String],
        mode: AttachMode,
    ) -> Result<(), DataplaneError> {
        let (pinned, fresh): (Vec<&String>, Vec<&String>) =
            ifaces.iter().partition(|i| self.link_pin(i).exists());
        let before = self.links.len();
        // New interfaces first, then this run's slow path, then the links
        // taken over: what fails on the way leaves the previous run's
        // programs in force (see `Dataplane::load`). Until the slow path is
        // armed, new interfaces tail-call the previous one.
        let steps = fresh
            .into_iter()
            .map(Some)
            .chain(std::iter::once(None))
            .chain(pinned.into_iter().map(Some));
        for step in steps {
            let done = match step {
                Some(iface) => self.attach(iface, mode).map(drop),
                None => self.arm_slow_path(),
            };
            if let Err(e) = done {
                let attached = self.links.split_off(before);
                let (adopted, fresh): (Vec<Link>, Vec<Link>) = attached
                    .into_iter()
                    .partition(|l| l.attachment.mode == ADOPTED);
                self.detach(fresh);
                self.links.extend(adopted);
                return Err(e);
            }
        }
        // Only once every configured interface runs this program: a start
        // that failed on the way leaves the previous run's links as they
        // were, these included.
        self.detach_unlisted(ifaces);
        Ok(())
    }

    /// Attaches the program to `iface` and lets it redirect there. A link
    /// pinned by a previous run is taken over in place (the new program
    /// replaces the old one atomically: no packet sees no program).
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<Attachment, DataplaneError> {
        let index = ifindex(iface)?;
        let pin = self.link_pin(iface);
        self.add_tx_port(index)?;
        let result = self.attach_with_port(iface, index, pin.clone(), mode);
        // A previous run's link still redirects there: only a port added
        // for a link that did not come about is taken out again (also
        // where a defunct pinned link was cleared for it).
        if result.is_err() && !pin.exists() {
            if let Err(e) = self.tx_ports.remove(index).map_err(map_err("TX_PORTS")) {
                warn!(iface, error = %e, "removing from TX_PORTS failed");
            }
        }
        result
    }

    fn attach_with_port(
        &mut self,
        iface: &str,
        index: u32,
        pin: PathBuf,
        mode: AttachMode,
    ) -> Result<Attachment, DataplaneError> {
        let prog = self.xdp()?;
        let taken_over = if pin.exists() {
            take_over(prog, iface, &pin)?
        } else {
            None
        };
        let adopted = taken_over.is_some();
        let (id, mode_name) = if let Some(id) = taken_over {
            (id, ADOPTED)
        } else {
            let fail = |mode: &str| {
                let what = format!("attaching in {mode} mode");
                move |e: ProgramError| iface_err(iface, &what)(with_sources(&e))
            };
            match mode {
                AttachMode::Native => (
                    prog.attach_to_if_index(index, XdpMode::Driver)
                        .map_err(fail("native"))?,
                    "native",
                ),
                AttachMode::Skb => (
                    prog.attach_to_if_index(index, XdpMode::Skb)
                        .map_err(fail("skb"))?,
                    "skb",
                ),
                AttachMode::Auto => match prog.attach_to_if_index(index, XdpMode::Driver) {
                    Ok(id) => (id, "native"),
                    Err(e) => {
                        let error = with_sources(&e);
                        warn!(
                            iface,
                            error, "native XDP not available, falling back to skb mode"
                        );
                        (
                            prog.attach_to_if_index(index, XdpMode::Skb)
                                .map_err(fail("skb"))?,
                            "skb",
                        )
                    }
                },
            }
        };
        let link = prog
            .take_link(id)
            .map_err(|e| iface_err(iface, "taking the link")(e.to_string()))?;
        let fd = FdLink::try_from(link).map_err(|e| {
            iface_err(
                iface,
                "the kernel attached XDP without a bpf_link, which cannot be pinned",
            )(e.to_string())
        })?;
        let fd = if adopted {
            fd
        } else {
            fd.pin(&pin)
                .map_err(|e| iface_err(iface, "pinning the link")(e.to_string()))?
                .into()
        };
        let attachment = Attachment {
            iface: iface.to_owned(),
            ifindex: index,
            mode: mode_name,
        };
        info!(iface, mode = mode_name, "XDP attached");
        self.links.push(Link {
            fd,
            pin,
            attachment: attachment.clone(),
        });
        Ok(attachment)
    }

    pub fn attachments(&self) -> Vec<Attachment> {
        self.links.iter().map(|l| l.attachment.clone()).collect()
    }

    /// Detaches from every interface (in reverse order of attaching): the
    /// pins go, and closing the last reference destroys each link.
    pub fn detach_all(&mut self) {
        let links = std::mem::take(&mut self.links);
        self.detach(links);
    }

    fn detach(&mut self, links: Vec<Link>) {
        for link in links.into_iter().rev() {
            let iface = link.attachment.iface.clone();
            if let Err(e) = std::fs::remove_file(&link.pin) {
                warn!(iface, error = %e, "removing the pinned link failed");
            }
            drop(link.fd);
            info!(iface, "XDP detached");
            if let Err(e) = self
                .tx_ports
                .remove(link.attachment.ifindex)
                .map_err(map_err("TX_PORTS"))
            {
                warn!(iface, error = %e, "removing from TX_PORTS failed");
            }
        }
    }

    /// Leaves the program attached and every map pinned: forwarding goes on
    /// without an agent, and the next `slb run` adopts this state.
    pub fn keep_running(mut self) {
        self.keep_pins();
        for link in std::mem::take(&mut self.links) {
            info!(iface = %link.attachment.iface, pin = %link.pin.display(), "XDP left attached");
        }
    }
}
