//! The SRTP cost floor of forwarding: every forwarded packet is encrypted once per subscriber, with that
//! subscriber's keys, whatever the SFU does around it. Criterion benchmarks of str0m's crypto provider
//! (aws-lc-rs, the node's backend) protecting a typical forwarded video packet: a 12-byte RTP header plus
//! 16 bytes of header extensions (authenticated, not encrypted) and a 1000-byte payload.
//!
//! `cargo bench -p homeroom-media-node --bench srtp`. Two figures per profile:
//! - `cipher`: the cipher call alone (AES-GCM seal, or AES-CTR plus HMAC-SHA1 for the 80-bit-tag profile);
//! - `protect`: what str0m's `SrtpContext::protect_rtp` does per packet around it: a zeroed output buffer,
//!   the header copied in, the payload encrypted, the tag appended (mirrored here: str0m keeps it private).
//!
//! str0m peers negotiate AEAD_AES_256_GCM (str0m's first preference); Chrome offers AEAD_AES_128_GCM and
//! AES_CM_128_HMAC_SHA1_80.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use str0m::crypto::from_feature_flags;

const HEADER: usize = 28;
const PAYLOAD: usize = 1000;
const GCM_TAG: usize = 16;
const HMAC_TAG: usize = 10;

fn packet() -> Vec<u8> {
    let mut packet = vec![0u8; HEADER + PAYLOAD];
    packet[0] = 0x90; // V=2, X=1
    packet[1] = 96;
    for (i, b) in packet.iter_mut().enumerate().skip(HEADER) {
        *b = i as u8;
    }
    packet
}

fn srtp(c: &mut Criterion) {
    let provider = from_feature_flags();
    let srtp = provider.srtp_provider;
    let hmac = provider.sha1_hmac_provider;
    let input = packet();
    let mut group = c.benchmark_group("srtp_protect_1000B");
    group.throughput(Throughput::Elements(1));

    let mut gcm256 = srtp.aead_aes_256_gcm().create_cipher([7; 32], true);
    let mut gcm128 = srtp.aead_aes_128_gcm().create_cipher([7; 16], true);
    let mut ctr = srtp.aes_128_cm_sha1_80().create_cipher([7; 16], true);
    let iv12 = [3u8; 12];
    let iv16 = [3u8; 16];
    let auth_key = [9u8; 20];

    let mut out = vec![0u8; HEADER + PAYLOAD + GCM_TAG + 16];
    group.bench_function("aead_aes_256_gcm/cipher", |b| {
        b.iter(|| {
            gcm256
                .encrypt(&iv12, black_box(&input[..HEADER]), black_box(&input[HEADER..]), &mut out[HEADER..])
                .expect("seal");
            black_box(&out);
        })
    });
    group.bench_function("aead_aes_256_gcm/protect", |b| {
        b.iter(|| {
            let mut output = vec![0u8; input.len() + GCM_TAG];
            output[..HEADER].copy_from_slice(&input[..HEADER]);
            gcm256.encrypt(&iv12, &input[..HEADER], &input[HEADER..], &mut output[HEADER..]).expect("seal");
            black_box(output)
        })
    });
    group.bench_function("aead_aes_128_gcm/cipher", |b| {
        b.iter(|| {
            gcm128
                .encrypt(&iv12, black_box(&input[..HEADER]), black_box(&input[HEADER..]), &mut out[HEADER..])
                .expect("seal");
            black_box(&out);
        })
    });
    group.bench_function("aead_aes_128_gcm/protect", |b| {
        b.iter(|| {
            let mut output = vec![0u8; input.len() + GCM_TAG];
            output[..HEADER].copy_from_slice(&input[..HEADER]);
            gcm128.encrypt(&iv12, &input[..HEADER], &input[HEADER..], &mut output[HEADER..]).expect("seal");
            black_box(output)
        })
    });
    group.bench_function("aes_cm_128_hmac_sha1_80/cipher", |b| {
        b.iter(|| {
            ctr.encrypt(&iv16, black_box(&input[HEADER..]), &mut out[HEADER..]).expect("ctr");
            let roc = 0u32.to_be_bytes();
            black_box(hmac.sha1_hmac(&auth_key, &[&out[..HEADER + PAYLOAD], &roc]));
        })
    });
    group.bench_function("aes_cm_128_hmac_sha1_80/protect", |b| {
        b.iter(|| {
            // As str0m: room for the tag and the CTR scratch, then truncated.
            let mut output = vec![0u8; input.len() + HMAC_TAG + 5];
            ctr.encrypt(&iv16, &input[HEADER..], &mut output[HEADER..]).expect("ctr");
            output[..HEADER].copy_from_slice(&input[..HEADER]);
            let roc = 0u32.to_be_bytes();
            let tag = hmac.sha1_hmac(&auth_key, &[&output[..HEADER + PAYLOAD], &roc]);
            output[HEADER + PAYLOAD..HEADER + PAYLOAD + HMAC_TAG].copy_from_slice(&tag[..HMAC_TAG]);
            output.truncate(HEADER + PAYLOAD + HMAC_TAG);
            black_box(output)
        })
    });
    group.finish();
}

criterion_group!(benches, srtp);
criterion_main!(benches);
