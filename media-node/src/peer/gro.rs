//! UDP generic receive offload (GRO) for the test peer's socket: the receiving half of the node's GSO.
//!
//! On loopback the sender's system call also runs the receiver's side of the kernel: a GSO send of a run of
//! datagrams is cut into datagrams at the receiving socket, on the sender's CPU, unless that socket has
//! `UDP_GRO` on — then the run is queued whole and read with one `recvmsg`, its segment size in a
//! `UDP_GRO` control message. A sender to another machine does not pay for its receivers, and a NIC with UDP
//! segmentation offload cuts runs in hardware; peers with GRO make the node's loopback figures closer to that.
//! Load tools choose ([`super::PeerOptions::gro`]); the peer sees the same datagrams either way.
//!
//! [`segments`] is the pure rule for cutting what one read returned; [`try_recv`] does the system call.

use nix::sys::socket::{recvmsg, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// A buffer that holds the largest run a GSO send can carry (one IPv4 datagram's payload).
pub(crate) const BUFFER_BYTES: usize = 65_536;

/// Asks the kernel to queue GSO runs whole on `socket` (Linux 5.0 and later).
pub(crate) fn enable(socket: &UdpSocket) -> io::Result<()> {
    nix::sys::socket::setsockopt(socket, sockopt::UdpGroSegment, &true).map_err(io::Error::from)
}

/// What one read returned: `len` bytes from `source`, datagrams of `segment` bytes each but a shorter last
/// one (`None`: one datagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Read {
    pub(crate) len: usize,
    pub(crate) source: SocketAddr,
    pub(crate) segment: Option<usize>,
}

/// Reads what is queued without waiting (`WouldBlock` when nothing is).
pub(crate) fn try_recv(socket: &UdpSocket, buffer: &mut [u8]) -> io::Result<Read> {
    socket.try_io(Interest::READABLE, || {
        let mut control = nix::cmsg_space!(i32);
        let mut payload = [IoSliceMut::new(buffer)];
        let message =
            recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut payload, Some(&mut control), MsgFlags::empty())
                .map_err(io::Error::from)?;
        let segment = message
            .cmsgs()
            .map_err(io::Error::from)?
            .find_map(|cmsg| match cmsg {
                ControlMessageOwned::UdpGroSegments(size) => usize::try_from(size).ok(),
                _ => None,
            })
            .filter(|size| *size > 0);
        let source = message
            .address
            .as_ref()
            .and_then(socket_addr)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a datagram without an IP source address"))?;
        Ok(Read { len: message.bytes, source, segment })
    })
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// The datagrams of one read: `data` cut every `segment` bytes (the last may be shorter), or whole without a
/// segment size. An empty read is one empty datagram, as `recv` would return it.
pub(crate) fn segments(data: &[u8], segment: Option<usize>) -> impl Iterator<Item = &[u8]> {
    let size = segment.unwrap_or(data.len()).max(1);
    let empty = data.is_empty().then_some(data);
    data.chunks(size).chain(empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_read_is_cut_at_its_segment_size_with_a_shorter_last_datagram() {
        let data: Vec<u8> = (0..25).collect();
        let cut: Vec<&[u8]> = segments(&data, Some(10)).collect();
        assert_eq!(cut.iter().map(|d| d.len()).collect::<Vec<_>>(), [10, 10, 5]);
        assert_eq!(cut.concat(), data, "nothing lost or reordered");
        assert_eq!(segments(&data, None).count(), 1, "no segment size: one datagram");
        assert_eq!(segments(&data, Some(25)).count(), 1);
        assert_eq!(segments(&[], None).collect::<Vec<_>>(), [&[] as &[u8]], "an empty datagram stays one");
    }

    /// The real system calls on loopback: a GSO run sent to a GRO socket is read once, with its segment size,
    /// and cuts into the datagrams that were sent.
    #[tokio::test]
    async fn a_gso_run_is_read_whole_and_cut_into_its_datagrams() {
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        enable(&receiver).expect("UDP_GRO (Linux 5.0 and later)");
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = receiver.local_addr().unwrap();
        let run: Vec<str0m::net::Transmit> = (0..4u8)
            .map(|i| str0m::net::Transmit {
                proto: str0m::net::Protocol::Udp,
                source: sender.local_addr().unwrap(),
                destination: to,
                contents: vec![i; if i == 3 { 300 } else { 1_000 }].into(),
            })
            .collect();
        crate::gso::send_run(&sender, &run).await.expect("GSO send");
        sender.send_to(&[9u8; 80], to).await.unwrap();

        let mut buffer = vec![0u8; BUFFER_BYTES];
        let mut datagrams: Vec<Vec<u8>> = Vec::new();
        let mut reads = 0;
        while datagrams.len() < 5 {
            tokio::time::timeout(Duration::from_secs(2), receiver.readable()).await.expect("readable").unwrap();
            let Ok(read) = try_recv(&receiver, &mut buffer) else { continue };
            assert_eq!(read.source, sender.local_addr().unwrap());
            reads += 1;
            datagrams.extend(segments(&buffer[..read.len], read.segment).map(<[u8]>::to_vec));
        }
        assert_eq!(reads, 2, "the run in one read, the lone datagram in another");
        let lengths: Vec<usize> = datagrams.iter().map(Vec::len).collect();
        assert_eq!(lengths, [1_000, 1_000, 1_000, 300, 80]);
        for (i, datagram) in datagrams.iter().enumerate().take(4) {
            assert!(datagram.iter().all(|b| usize::from(*b) == i), "datagram {i} intact and in order");
        }
    }
}
