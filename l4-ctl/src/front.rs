//! The program on the front's interface: attaching it so that it outlives `l4-ctl`, replacing
//! it with a new build without touching the maps, detaching it, and describing what is there.
//!
//! Everything lives under the pin directory (default `/sys/fs/bpf/dl7`):
//! - one pin per map (named as in [`common::map_names`]), reused by every later load, so an
//!   upgrade keeps the connection table and every flow keeps its real;
//! - `prog`: the program, so that `status` can name the running build's id;
//! - `link_native` or `link_generic`: the XDP link to the interface. The link keeps the program
//!   attached after `load` exits; its pin's name records the attach mode, which the kernel does
//!   not report for a link.
//!
//! An upgrade (`load` while a link is pinned) swaps the program inside the existing link with
//! `BPF_LINK_UPDATE`: one atomic step, no moment without a program on the interface.

use std::{
    ffi::CString,
    fs, io,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
};

use aya::programs::{
    Xdp,
    links::{FdLink, PinnedLink},
    xdp::XdpLink,
};

use crate::{AttachMode, Balancer, BalancerError};

/// Name of the program's pin in the pin directory.
const PROGRAM_PIN: &str = "prog";

/// Everything that can go wrong while attaching, upgrading or detaching.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error("no interface named {0:?}")]
    UnknownInterface(String),
    #[error(
        "dl7 is attached to {attached} in {mode} mode; run `l4-ctl unload` before loading it on {requested} or in another mode"
    )]
    AttachedElsewhere {
        attached: String,
        mode: &'static str,
        requested: String,
    },
    #[error("dl7 is not attached: no link pinned in {} (run `l4-ctl load --iface IFACE`)", .0.display())]
    NotAttached(PathBuf),
    #[error("{what} {}", .path.display())]
    Pin {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the pinned XDP link {} is not usable", .path.display())]
    Link {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Balancer(#[from] BalancerError),
}

type Result<T, E = FrontError> = std::result::Result<T, E>;

/// What `l4-ctl status` reports about the attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The interface's name now (from the link's ifindex).
    pub iface: String,
    pub ifindex: u32,
    pub mode: AttachMode,
    /// The id of the program the link runs.
    pub program_id: u32,
    /// The id of the link.
    pub link_id: u32,
}

/// What [`install`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    /// The program was attached to an interface that had none of ours.
    Attached,
    /// The program replaced the previous build inside the existing link.
    Upgraded,
}

fn link_pin(pin_dir: &Path, mode: AttachMode) -> PathBuf {
    pin_dir.join(match mode {
        AttachMode::Native => "link_native",
        AttachMode::Generic => "link_generic",
    })
}

fn mode_name(mode: AttachMode) -> &'static str {
    match mode {
        AttachMode::Native => "native",
        AttachMode::Generic => "generic",
    }
}

/// The pinned link and the mode its pin name records, if a link is pinned.
pub fn pinned_link(pin_dir: &Path) -> Option<(PathBuf, AttachMode)> {
    [AttachMode::Native, AttachMode::Generic]
        .into_iter()
        .map(|mode| (link_pin(pin_dir, mode), mode))
        .find(|(path, _)| path.exists())
}

/// Loads `balancer`'s program onto `iface` and pins it: a fresh attach, or an in-place
/// upgrade when dl7 is already attached there in the same mode. The maps are whatever
/// `balancer` was loaded with (the pinned ones), so nothing in them changes.
pub fn install(
    balancer: &mut Balancer,
    pin_dir: &Path,
    iface: &str,
    mode: AttachMode,
) -> Result<Installed> {
    let ifindex = ifindex(iface)?;
    let installed = match pinned_link(pin_dir) {
        Some((path, pinned_mode)) => {
            let current = link_ifindex(&path)?;
            if current != ifindex || pinned_mode != mode {
                return Err(FrontError::AttachedElsewhere {
                    attached: ifname(current),
                    mode: mode_name(pinned_mode),
                    requested: iface.to_owned(),
                });
            }
            let link = PinnedLink::from_pin(&path).map_err(|e| link_err(&path, e))?;
            let link = XdpLink::try_from(FdLink::from(link)).map_err(|e| link_err(&path, e))?;
            let program = program_mut(balancer)?;
            // The kernel swaps the program inside the link; the pin still names the link.
            program
                .attach_to_link(link)
                .map_err(|e| link_err(&path, e))?;
            Installed::Upgraded
        }
        None => {
            let path = link_pin(pin_dir, mode);
            let id = balancer.attach(iface, mode)?;
            let link = program_mut(balancer)?
                .take_link(id)
                .map_err(|e| link_err(&path, e))?;
            let link = FdLink::try_from(link).map_err(|e| link_err(&path, e))?;
            // If pinning fails, the link is dropped here and the program detached again.
            link.pin(&path).map_err(|e| link_err(&path, e))?;
            Installed::Attached
        }
    };
    let prog_pin = pin_dir.join(PROGRAM_PIN);
    match fs::remove_file(&prog_pin) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(FrontError::Pin {
                what: "removing the old program pin",
                path: prog_pin,
                source,
            });
        }
    }
    program_mut(balancer)?
        .pin(&prog_pin)
        .map_err(|e| link_err(&prog_pin, e))?;
    Ok(installed)
}

fn program_mut(balancer: &mut Balancer) -> Result<&mut Xdp> {
    Ok(balancer.program_mut()?)
}

fn link_err(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> FrontError {
    FrontError::Link {
        path: path.to_owned(),
        source: Box::new(e),
    }
}

/// Detaches the program and removes every pin under `pin_dir` (the maps go with the last
/// reference). Established flows are then handled by the front's kernel.
pub fn uninstall(pin_dir: &Path) -> Result<()> {
    let Some((path, _)) = pinned_link(pin_dir) else {
        return Err(FrontError::NotAttached(pin_dir.to_owned()));
    };
    detach_and_unpin(&path, pin_dir)
}

/// Removes the link pin at `link` first (the last reference to the link: the program is
/// detached), then every other pin under `pin_dir` and the directory. Shared with the reals'
/// decapsulator, whose pins are laid out the same way.
pub(crate) fn detach_and_unpin(link: &Path, pin_dir: &Path) -> Result<()> {
    fs::remove_file(link).map_err(|source| FrontError::Pin {
        what: "removing the link pin",
        path: link.to_owned(),
        source,
    })?;
    remove_pins(pin_dir)
}

/// Removes every pin under `pin_dir` and the directory: after [`uninstall`], or to undo a
/// first `load` that failed to attach.
pub fn remove_pins(pin_dir: &Path) -> Result<()> {
    let entries = fs::read_dir(pin_dir).map_err(|source| FrontError::Pin {
        what: "listing",
        path: pin_dir.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        fs::remove_file(&path).map_err(|source| FrontError::Pin {
            what: "removing the pin",
            path: path.clone(),
            source,
        })?;
    }
    fs::remove_dir(pin_dir).map_err(|source| FrontError::Pin {
        what: "removing the pin directory",
        path: pin_dir.to_owned(),
        source,
    })
}

/// The attachment pinned under `pin_dir`; an error that says to run `load` when there is none.
pub fn require_attachment(pin_dir: &Path) -> Result<Attachment> {
    attachment(pin_dir)?.ok_or_else(|| FrontError::NotAttached(pin_dir.to_owned()))
}

/// The attachment pinned under `pin_dir`, if any.
pub fn attachment(pin_dir: &Path) -> Result<Option<Attachment>> {
    let Some((path, mode)) = pinned_link(pin_dir) else {
        return Ok(None);
    };
    let info = link_info(&path)?;
    Ok(Some(Attachment {
        iface: ifname(info.ifindex),
        ifindex: info.ifindex,
        mode,
        program_id: info.prog_id,
        link_id: info.id,
    }))
}

/// The index of interface `iface` (in this process's network namespace).
pub fn ifindex(iface: &str) -> Result<u32> {
    let name = CString::new(iface).map_err(|_| FrontError::UnknownInterface(iface.to_owned()))?;
    // SAFETY: `name` is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(FrontError::UnknownInterface(iface.to_owned())),
        index => Ok(index),
    }
}

/// The name of interface `ifindex`, or `ifindex N` when it has none (it was deleted).
pub fn ifname(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return format!("ifindex {ifindex}");
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into `buf`.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn link_ifindex(path: &Path) -> Result<u32> {
    Ok(link_info(path)?.ifindex)
}

/// The parts of the kernel's `struct bpf_link_info` for an XDP (or tcx) link that aya does
/// not expose (the interface).
pub(crate) struct XdpLinkInfo {
    pub(crate) id: u32,
    pub(crate) prog_id: u32,
    pub(crate) ifindex: u32,
}

/// The bpf(2) syscall with a `union bpf_attr` given as words.
///
/// # Safety
/// Every pointer stored in `attr` must be valid for what `cmd` does with it.
unsafe fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> libc::c_long {
    // SAFETY: `attr` is a zeroed-then-filled bpf_attr large enough for every command used
    // here; the caller vouches for the pointers in it.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    }
}

/// `BPF_OBJ_GET` on the link's pin, then `BPF_OBJ_GET_INFO_BY_FD`.
pub(crate) fn link_info(path: &Path) -> Result<XdpLinkInfo> {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let sys_err = |what: &'static str| FrontError::Pin {
        what,
        path: path.to_owned(),
        source: io::Error::last_os_error(),
    };
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| FrontError::NotAttached(path.to_owned()))?;
    // BPF_OBJ_GET's attr: pathname (u64), bpf_fd, file_flags, path_fd.
    let mut attr = [0u64; 16];
    attr[0] = c_path.as_ptr() as u64;
    // SAFETY: the path pointer lives until the call returns.
    let fd = unsafe { bpf(BPF_OBJ_GET, &mut attr) };
    if fd < 0 {
        return Err(sys_err("opening the link pin"));
    }
    // SAFETY: the kernel just returned this descriptor to us; OwnedFd closes it.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id (u32 each), then an 8-aligned union whose xdp
    // and tcx members start with ifindex (offset 16).
    let mut info = [0u64; 16];
    let mut attr = [0u64; 16];
    attr[0] = fd.as_raw_fd() as u64 | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: the kernel writes at most info_len bytes into `info`, which outlives the call.
    if unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) } < 0 {
        return Err(sys_err("reading the link's info from"));
    }
    Ok(XdpLinkInfo {
        id: (info[0] >> 32) as u32,
        prog_id: info[1] as u32,
        ifindex: info[2] as u32,
    })
}
