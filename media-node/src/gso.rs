//! UDP generic segmentation offload (GSO) for the media socket's send path.
//!
//! A lecture's video frame reaches every subscriber as a run of datagrams to one address (the core writes a
//! frame's packets to each subscriber before the next, see `Sfu::handle_datagrams`). Sent one `sendto` each,
//! the kernel walks its whole UDP/IP output path per datagram — the largest share of the node's CPU in the
//! lecture profile (docs/benchmarks.md). With GSO one `sendmsg` carries the run and a `UDP_SEGMENT` control
//! message; the kernel splits it into the same datagrams on the wire (or, on loopback, at the receiving
//! socket), so peers see no difference.
//!
//! [`run_len`] is the pure rule for what one send may carry; [`send_run`] does the system call. A kernel
//! without UDP GSO (before Linux 4.18) does not know the socket option, which [`kernel_supports`] asks once at
//! start: such a kernel would ignore the control message and send each run as one oversized datagram. A device
//! without it answers a GSO send with an error; the driver then sends that run one datagram at a time (and
//! stops using GSO if the failures keep coming): nothing is lost, and the log says so.

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use str0m::net::Transmit;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Most datagrams in one GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels, 128 on newer).
pub(crate) const MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO send: one IPv4 datagram's payload (65,507) with room to spare.
pub(crate) const MAX_BYTES: usize = 64_000;
/// Largest datagram sent in a run. Above a path's MTU the kernel refuses a GSO send (`EINVAL`) where a plain
/// send would be fragmented; WebRTC keeps its packets near 1,200 bytes, so larger ones simply go alone.
pub(crate) const MAX_SEGMENT_BYTES: usize = 1_400;

/// How many transmits from the start of `transmits` one GSO send can carry: consecutive, to one destination,
/// each as long as the first except a shorter last one, at most [`MAX_SEGMENTS`] and [`MAX_BYTES`]. `1` (or
/// `0` for an empty slice) means "send the first alone".
pub(crate) fn run_len(transmits: &[Transmit]) -> usize {
    let Some(first) = transmits.first() else { return 0 };
    let segment = first.contents.len();
    if segment == 0 || segment > MAX_SEGMENT_BYTES {
        return 1;
    }
    let mut count = 1;
    let mut bytes = segment;
    for next in transmits.iter().skip(1) {
        let len = next.contents.len();
        if next.destination != first.destination
            || next.source != first.source
            || len == 0
            || len > segment
            || count == MAX_SEGMENTS
            || bytes + len > MAX_BYTES
        {
            break;
        }
        count += 1;
        bytes += len;
        if len < segment {
            break; // a shorter datagram can only be the last of a run
        }
    }
    count
}

/// Whether the kernel knows UDP GSO: it reads the socket's `UDP_SEGMENT` option (0 unless set), which a
/// kernel without GSO refuses (`ENOPROTOOPT`).
pub(crate) fn kernel_supports(socket: &UdpSocket) -> bool {
    nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::UdpGsoSegment).is_ok()
}

/// Whether a failed GSO send means the kernel or the device cannot do GSO (rather than a full buffer or an
/// unreachable peer).
pub(crate) fn is_unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error().map(Errno::from_raw),
        Some(Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP)
    )
}

/// What the sender does after a GSO send failed with an [`is_unsupported`] error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// Send this run one datagram per call and keep GSO for the next: the route to this one peer cannot take
    /// it (EINVAL: a path MTU below the segment size; EIO: a device on that route without offload).
    ThisRun,
    /// Stop using GSO: the kernel has no UDP GSO at all, or failures keep coming with no success between.
    ForGood,
}

/// Consecutive per-route failures with no GSO success between them after which GSO is given up.
const FAILURES_BEFORE_GIVING_UP: u32 = 32;

/// Decides between [`Fallback`]s: one peer behind a small MTU must not switch GSO off for every peer.
#[derive(Debug, Default)]
pub(crate) struct GsoHealth {
    failures_in_a_row: u32,
}

impl GsoHealth {
    pub(crate) fn succeeded(&mut self) {
        self.failures_in_a_row = 0;
    }

    pub(crate) fn failed(&mut self, error: &io::Error) -> Fallback {
        if matches!(error.raw_os_error().map(Errno::from_raw), Some(Errno::ENOPROTOOPT | Errno::EOPNOTSUPP)) {
            return Fallback::ForGood;
        }
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        if self.failures_in_a_row >= FAILURES_BEFORE_GIVING_UP {
            Fallback::ForGood
        } else {
            Fallback::ThisRun
        }
    }
}

/// Sends `run` (a run [`run_len`] accepted, at least two transmits) as one GSO `sendmsg`, waiting for room
/// in the socket buffer like `send_to` does. The datagrams go as one `iovec` each, which the kernel joins
/// and then cuts at the segment size: nothing is copied here. Returns the bytes sent.
pub(crate) async fn send_run(socket: &UdpSocket, run: &[Transmit]) -> io::Result<usize> {
    let Some(first) = run.first() else { return Ok(0) };
    let segment = u16::try_from(first.contents.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let address = SockaddrStorage::from(first.destination);
    let payload: Vec<IoSlice<'_>> = run.iter().map(|transmit| IoSlice::new(&transmit.contents)).collect();
    socket
        .async_io(Interest::WRITABLE, || {
            let control = [ControlMessage::UdpGsoSegments(&segment)];
            sendmsg(socket.as_raw_fd(), &payload, &control, MsgFlags::empty(), Some(&address)).map_err(io::Error::from)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::net::Protocol;

    fn transmit(to: &str, len: usize) -> Transmit {
        Transmit {
            proto: Protocol::Udp,
            source: "127.0.0.1:5000".parse().unwrap(),
            destination: to.parse().unwrap(),
            contents: vec![7u8; len].into(),
        }
    }

    const A: &str = "127.0.0.1:6001";
    const B: &str = "127.0.0.1:6002";

    #[test]
    fn one_route_refusing_gso_does_not_switch_it_off_for_every_peer() {
        let error = |errno: Errno| io::Error::from_raw_os_error(errno as i32);
        let mut health = GsoHealth::default();
        assert_eq!(health.failed(&error(Errno::ENOPROTOOPT)), Fallback::ForGood, "no UDP GSO in this kernel");
        let mut health = GsoHealth::default();
        for _ in 0..100 {
            assert_eq!(health.failed(&error(Errno::EINVAL)), Fallback::ThisRun, "one small-MTU peer");
            health.succeeded(); // the other peers' runs still go out with GSO
        }
        let gave_up = (0..FAILURES_BEFORE_GIVING_UP).map(|_| health.failed(&error(Errno::EIO))).last();
        assert_eq!(gave_up, Some(Fallback::ForGood), "every run failing: GSO does not work here");
    }

    #[test]
    fn a_run_is_consecutive_datagrams_of_one_length_to_one_destination() {
        let out = [transmit(A, 1100), transmit(A, 1100), transmit(A, 1100), transmit(B, 1100)];
        assert_eq!(run_len(&out), 3);
        assert_eq!(run_len(&out[3..]), 1);
        assert_eq!(run_len(&[]), 0);
    }

    #[test]
    fn a_shorter_datagram_ends_a_run_and_a_longer_one_starts_the_next() {
        let out = [transmit(A, 1100), transmit(A, 1100), transmit(A, 300), transmit(A, 1100)];
        assert_eq!(run_len(&out), 3, "the short one is the run's last");
        let longer = [transmit(A, 300), transmit(A, 1100)];
        assert_eq!(run_len(&longer), 1, "a longer datagram cannot follow");
    }

    #[test]
    fn runs_stay_within_the_kernel_limits() {
        let many: Vec<_> = (0..100).map(|_| transmit(A, 100)).collect();
        assert_eq!(run_len(&many), MAX_SEGMENTS);
        let big: Vec<_> = (0..60).map(|_| transmit(A, 1_300)).collect();
        let n = run_len(&big);
        assert!(n * 1_300 <= MAX_BYTES && (n + 1) * 1_300 > MAX_BYTES, "{n}");
        assert_eq!(run_len(&[transmit(A, 1_500), transmit(A, 1_500)]), 1, "above the segment cap: alone");
    }

    /// The real system call on loopback: one GSO send arrives as the same datagrams, in order. Linux has had
    /// UDP GSO since 4.18, so there an "unsupported" answer fails the test rather than skipping it.
    #[tokio::test]
    async fn a_run_arrives_as_the_original_datagrams() {
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(kernel_supports(&sender), cfg!(target_os = "linux"), "the start-up probe agrees");
        let to = receiver.local_addr().unwrap().to_string();
        let mut run: Vec<_> = (0..5u8)
            .map(|i| {
                let mut t = transmit(&to, if i == 4 { 200 } else { 1_000 });
                t.contents = vec![i; t.contents.len()].into();
                t
            })
            .collect();
        run.iter_mut().for_each(|t| t.source = sender.local_addr().unwrap());
        assert_eq!(run_len(&run), 5);
        match send_run(&sender, &run).await {
            Ok(n) => assert_eq!(n, 4 * 1_000 + 200),
            Err(e) if is_unsupported(&e) && !cfg!(target_os = "linux") => return, // the driver falls back
            Err(e) => panic!("GSO send failed: {e}"),
        }
        let mut buffer = [0u8; 2048];
        for i in 0..5u8 {
            let n = tokio::time::timeout(std::time::Duration::from_secs(2), receiver.recv(&mut buffer))
                .await
                .expect("a datagram within 2 s")
                .unwrap();
            assert_eq!(n, if i == 4 { 200 } else { 1_000 });
            assert!(buffer[..n].iter().all(|b| *b == i), "datagram {i} in order and intact");
        }
    }
}
