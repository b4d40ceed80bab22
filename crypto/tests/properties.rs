//! Property tests: two devices talking over a network that loses, withholds,
//! reorders, duplicates, corrupts and truncates messages, while time passes.
//! The scenario model (with a model of the skipped-key store's eviction and
//! expiry rules) lives in `support/scenario.rs` and also drives the fuzz
//! target.

// Helpers outside #[test] functions: a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use proptest::prelude::*;
use support::scenario::{Op, Party, run};

fn party() -> impl Strategy<Value = Party> {
    prop_oneof![Just(Party::Alice), Just(Party::Bob)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // Sending and delivering dominate; delivery picks any message sent so
        // far, so reordering and duplication come for free.
        10 => (party(), any::<u8>()).prop_map(|(from, len)| Op::Send { from, len: len % 64 }),
        10 => (party(), any::<u16>()).prop_map(|(to, pick)| Op::Deliver { to, pick }),
        1 => (party(), any::<u16>()).prop_map(|(to, pick)| Op::Drop { to, pick }),
        1 => (party(), 0u16..1500).prop_map(|(from, count)| Op::Withhold { from, count }),
        1 => any::<u8>().prop_map(|hours| Op::Wait { hours }),
        2 => (party(), any::<u16>(), any::<u16>()).prop_map(|(to, pick, bit)| Op::Tamper { to, pick, bit }),
        1 => (party(), any::<u16>(), any::<u16>()).prop_map(|(to, pick, keep)| Op::Truncate { to, pick, keep }),
        1 => party().prop_map(|who| Op::Reload { who }),
    ]
}

proptest! {
    // 16 cases: each runs up to 1,500 ops and 5,000 messages, and a withheld message that arrives
    // after its chain was passed costs up to 1,500 key derivations to refuse.
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Hundreds of messages each way under loss, withholding, reordering,
    /// duplication, tampering, truncation and the passing of time: every
    /// delivered message decrypts at most once, and exactly once while the
    /// specification says its key is kept; everything else is rejected with
    /// the session unchanged.
    #[test]
    fn hostile_network(seed in any::<u64>(), ops in prop::collection::vec(op(), 600..1500)) {
        let stats = run(seed, &ops).map_err(TestCaseError::fail)?;
        prop_assert!(stats.sent[0] > 0);
    }

    /// Fuzzer-style byte input goes through the same model.
    #[test]
    fn decoded_ops(seed in any::<u64>(), bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        run(seed, &Op::decode_all(&bytes)).map_err(TestCaseError::fail)?;
    }
}

/// A fixed long conversation: hundreds of messages each way, delivered in
/// shuffled batches with every message also replayed once.
#[test]
fn long_conversation_with_reordering_and_replays() {
    let mut ops = Vec::new();
    for round in 0u16..50 {
        for _ in 0..4 {
            ops.push(Op::Send { from: Party::Alice, len: 10 });
            ops.push(Op::Send { from: Party::Bob, len: 3 });
        }
        for k in 0..8u16 {
            let pick = round.wrapping_mul(31).wrapping_add(k.wrapping_mul(7919));
            ops.push(Op::Deliver { to: Party::Bob, pick });
            ops.push(Op::Deliver { to: Party::Alice, pick: pick.rotate_left(3) });
        }
        ops.push(Op::Tamper { to: Party::Alice, pick: round, bit: round * 17 });
        ops.push(Op::Tamper { to: Party::Bob, pick: round, bit: round * 29 });
        if round % 10 == 0 {
            ops.push(Op::Reload { who: Party::Bob });
        }
    }
    let stats = run(1, &ops).expect("scenario holds");
    assert_eq!(stats.sent[0], 200, "{stats:?}");
    assert_eq!(stats.delivered[1], 200, "{stats:?}");
    assert!(stats.sent[1] >= 190, "{stats:?}");
    assert_eq!(stats.delivered[0], stats.sent[1], "{stats:?}");
    assert!(stats.replays_rejected > 100, "{stats:?}");
    assert!(stats.tampered_rejected >= 99, "{stats:?}"); // Alice's inbox is empty in round 0
}

/// 3,000 consecutive messages withheld, then the conversation goes on: later
/// messages decrypt, the gap is reported as 2,000 lost keys, and of the
/// withheld messages that come after all, the newest 1,000 (whose keys are
/// kept) decrypt and the others are refused.
#[test]
fn three_thousand_withheld_messages_do_not_wedge_the_session() {
    let mut ops = vec![
        Op::Send { from: Party::Alice, len: 1 },
        Op::Deliver { to: Party::Bob, pick: 0 },
        Op::Send { from: Party::Bob, len: 1 },
        Op::Deliver { to: Party::Alice, pick: 0 },
        Op::Withhold { from: Party::Alice, count: 3000 },
    ];
    for k in 0..5u16 {
        ops.push(Op::Send { from: Party::Alice, len: 2 });
        ops.push(Op::Deliver { to: Party::Bob, pick: 3001 + k });
        ops.push(Op::Send { from: Party::Bob, len: 2 });
        ops.push(Op::Deliver { to: Party::Alice, pick: 1 + k });
    }
    // Some withheld messages are released: the newest keys are still there.
    ops.push(Op::Deliver { to: Party::Bob, pick: 3000 });
    ops.push(Op::Deliver { to: Party::Bob, pick: 1500 });
    let stats = run(3, &ops).expect("scenario holds");
    // The first message, the five after the gap, and the newest 1,000 withheld ones.
    assert_eq!(stats.delivered[1], 1006, "{stats:?}");
    assert_eq!(stats.lost, 2000, "{stats:?}");
    // 2,000 gone, one of them tried twice (before and in the final sweep).
    assert_eq!(stats.gone_rejected, 2001, "{stats:?}");
}
