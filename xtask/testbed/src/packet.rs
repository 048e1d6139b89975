//! Packets the tests build by hand, where no socket API makes them: the Internet checksum
//! and the ICMP error a router sends about a packet it could not forward.

use std::net::SocketAddrV4;

/// The Internet checksum (RFC 1071).
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The ICMP message (type 3 "destination unreachable", code 4 "fragmentation needed", with
/// `mtu`) about a TCP segment (sequence number `seq`, DF set) that `from` sent to `to`: what
/// goes after the IP header a raw ICMP socket adds.
pub fn frag_needed(from: SocketAddrV4, to: SocketAddrV4, seq: u32, mtu: u16) -> Vec<u8> {
    // The quoted packet: an IPv4 header and the first 8 bytes of the TCP header.
    let mut quoted = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    quoted.extend_from_slice(&from.ip().octets());
    quoted.extend_from_slice(&to.ip().octets());
    let sum = checksum(&quoted);
    quoted[10..12].copy_from_slice(&sum.to_be_bytes());
    quoted.extend_from_slice(&from.port().to_be_bytes());
    quoted.extend_from_slice(&to.port().to_be_bytes());
    quoted.extend_from_slice(&seq.to_be_bytes());
    let mut message = vec![3, 4, 0, 0, 0, 0];
    message.extend_from_slice(&mtu.to_be_bytes());
    message.extend_from_slice(&quoted);
    let sum = checksum(&message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_with_its_checksum_sums_to_zero() {
        let m = frag_needed(
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:40000".parse().unwrap(),
            7,
            1400,
        );
        assert_eq!(checksum(&m), 0);
        assert_eq!(checksum(&m[8..28]), 0, "the quoted IPv4 header's checksum");
        assert_eq!(&m[6..8], &1400u16.to_be_bytes());
    }
}
