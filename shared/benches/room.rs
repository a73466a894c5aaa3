//! Criterion benchmarks of the room core (no IO): admitting a connection, planning a chat message's fan-out,
//! resuming with a replay, and parsing client frames. `cargo bench -p homeroom-shared`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use homeroom_shared::auth::{Identity, TokenKey};
use homeroom_shared::protocol::{parse_client_frame, ClientFrame, ClientRequest, PermsPatch, Role};
use homeroom_shared::room::config::Limits;
use homeroom_shared::room::store::MemoryStore;
use homeroom_shared::room::{Output, Resume, Room, RoomKeys};
use homeroom_shared::ConnId;
use homeroom_shared::{TenantId, Timestamp, UserId};
use std::hint::black_box;

const NOW: Timestamp = Timestamp(1_700_000_000_000);

/// Coalescing is off: the clock stands still in these benchmarks, so a coalescing room would queue every
/// frame for a flush that never comes, and the figures would time queueing instead of fan-out planning.
fn limits() -> Limits {
    // The clock never advances, so the rate bucket never refills: a burst it cannot run out of, or a fast
    // enough core would exhaust it mid-measurement, get the sender cut, and time a no-op.
    Limits { capacity: 100_000, rate_burst: u32::MAX, rate_per_sec: 1_000_000, coalesce_ms: 0, ..Limits::default() }
}

fn identity(i: usize) -> Identity {
    Identity {
        user: UserId::parse(&format!("user-{i}")).unwrap(),
        name: format!("User {i}"),
        role: if i == 0 { Role::Teacher } else { Role::Student },
        tenant: TenantId::parse("default").unwrap(),
        rooms: None,
        perms: PermsPatch::default(),
        exp: NOW.as_secs() + 3600,
    }
}

fn drain(room: &mut Room<MemoryStore>) -> usize {
    let mut n = 0;
    while let Some(output) = room.poll_output() {
        if let Output::Send { to, .. } = output {
            n += to.len();
        }
    }
    n
}

/// A room with `members` connected participants (member 0 is the teacher).
fn room_with(members: usize) -> (Room<MemoryStore>, Vec<ConnId>) {
    let keys = RoomKeys { user: TokenKey::new(b"bench"), media: TokenKey::new(b"bench-node") };
    let mut room =
        Room::restore(MemoryStore::default(), limits(), keys, Some("default/bench"), Vec::new(), NOW).unwrap();
    let mut conns = Vec::new();
    for i in 0..members {
        conns.push(room.connect(&identity(i), None, Default::default(), NOW).unwrap().conn);
        drain(&mut room);
    }
    (room, conns)
}

fn join(c: &mut Criterion) {
    let mut group = c.benchmark_group("join");
    for members in [10, 100, 1000] {
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, &members| {
            let (mut room, _) = room_with(members);
            let mut next = members;
            b.iter(|| {
                let admitted = room.connect(&identity(next), None, Default::default(), NOW).unwrap();
                next += 1;
                black_box(drain(&mut room));
                room.disconnect(admitted.conn, NOW);
                drain(&mut room);
            });
        });
    }
    group.finish();
}

fn chat_fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("chat_fanout");
    for members in [100, 1000] {
        group.throughput(Throughput::Elements(members as u64));
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, &members| {
            let (mut room, conns) = room_with(members);
            let sender = conns[0];
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                let frame = ClientFrame::with_rid(
                    format!("r{i}"),
                    ClientRequest::ChatSend { text: "a question about the homework".into(), reply_to: None },
                );
                room.receive(sender, &frame.to_json(), NOW);
                // The message went to everyone (and the ack to the sender): the work was really done.
                let sent = drain(&mut room);
                assert!(sent >= members, "{sent} deliveries for {members} members");
                black_box(sent);
            });
        });
    }
    group.finish();
}

fn resume(c: &mut Criterion) {
    let mut group = c.benchmark_group("resume");
    for missed in [10u64, 100, 500] {
        group.bench_with_input(BenchmarkId::from_parameter(missed), &missed, |b, &missed| {
            let (mut room, conns) = room_with(20);
            for i in 0..missed {
                let frame = ClientFrame::with_rid(
                    format!("m{i}"),
                    ClientRequest::ChatSend { text: "x".into(), reply_to: None },
                );
                room.receive(conns[0], &frame.to_json(), NOW);
                drain(&mut room);
            }
            let (epoch, seq) = {
                let (e, s) = room.position();
                (e.to_owned(), s)
            };
            let who = identity(1);
            b.iter(|| {
                let resume = Resume { epoch: epoch.clone(), since: seq - missed };
                let admitted = room.connect(&who, Some(resume), Default::default(), NOW).unwrap();
                black_box(drain(&mut room));
                room.disconnect(admitted.conn, NOW);
                drain(&mut room);
            });
        });
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let text =
        r#"{"type":"chat.send","rid":"r-1234","text":"Could you repeat the last step, please?","reply_to":"lx1-40"}"#;
    c.bench_function("parse_client_frame", |b| b.iter(|| black_box(parse_client_frame(black_box(text)).unwrap())));
}

criterion_group!(benches, join, chat_fanout, resume, parse);
criterion_main!(benches);
