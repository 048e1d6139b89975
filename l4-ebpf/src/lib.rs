//! What every XDP object built from this crate needs exactly once: the license section the
//! kernel checks at load time, and the panic handler a `no_std` binary must have. The
//! binaries (`main.rs`, `bin/*.rs`) link this crate with `use l4_ebpf as _;`. It also holds
//! the header access both the balancer and the decapsulator use ([`headers`]).
#![no_std]

pub mod headers;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: no program in this crate has a panicking path the verifier would accept (every
    // access is bounds-checked explicitly), so this is never reached.
    unsafe { core::hint::unreachable_unchecked() }
}

#[used]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
