//! Model-based property test: random commit sequences, with checkpoints and remounts in between, against a
//! plain in-memory model. After every remount the state must equal the model.

mod common;

use std::collections::BTreeMap;

use mailstore::kv::{KvEngine, KvError, KvOp};
use mailstore::{Durability, Engine, Error, Options};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Op(KvOp),
    Checkpoint,
    Remount,
}

fn small_key() -> impl Strategy<Value = Vec<u8>> {
    (0u8..12).prop_map(|k| format!("k{k}").into_bytes())
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..300)
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (small_key(), value()).prop_map(|(key, value)| Step::Op(KvOp::Put { key, value })),
        2 => small_key().prop_map(|key| Step::Op(KvOp::Delete { key })),
        2 => (small_key(), prop::option::of(value()), prop::option::of(value()))
            .prop_map(|(key, expected, new)| Step::Op(KvOp::CompareAndSwap { key, expected, new })),
        1 => prop::collection::vec((small_key(), value()), 1..5).prop_map(|p| Step::Op(KvOp::PutMany(p))),
        1 => Just(Step::Checkpoint),
        1 => Just(Step::Remount),
    ]
}

/// Applies `op` to the model; `false` when the engine must reject it.
fn model_apply(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: &KvOp) -> bool {
    match op {
        KvOp::Put { key, value } => {
            model.insert(key.clone(), value.clone());
        }
        KvOp::Delete { key } => {
            model.remove(key);
        }
        KvOp::CompareAndSwap { key, expected, new } => {
            if model.get(key) != expected.as_ref() {
                return false;
            }
            match new {
                Some(v) => model.insert(key.clone(), v.clone()),
                None => model.remove(key),
            };
        }
        KvOp::PutMany(pairs) => {
            for (k, v) in pairs {
                model.insert(k.clone(), v.clone());
            }
        }
    }
    true
}

fn options(durability: Durability) -> Options {
    // Tiny generations and checkpoint depth, so rolls, checkpoints and truncation happen within a case.
    Options::default().log_target_size(4096).checkpoint_depth(6000).durability(durability)
}

fn run(steps: Vec<Step>, durability: Durability) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut db: KvEngine = Engine::mount(dir.path(), options(durability)).unwrap();
    let mut model = BTreeMap::new();
    let mut lsn = 0;
    for step in steps {
        match step {
            Step::Op(op) => {
                let accepted = model_apply(&mut model, &op);
                match db.commit(op) {
                    Ok(c) => {
                        prop_assert!(accepted, "engine accepted what the model rejects");
                        prop_assert_eq!(c.lsn, lsn + 1);
                        lsn = c.lsn;
                    }
                    Err(Error::Kv(KvError::Conflict { .. })) => {
                        prop_assert!(!accepted, "engine rejected what the model accepts");
                        lsn += 1; // a rejected operation is still a logged no-op
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("commit failed: {e}"))),
                }
            }
            Step::Checkpoint => {
                prop_assert_eq!(db.checkpoint().unwrap(), lsn);
            }
            Step::Remount => {
                db.dismount().unwrap();
                db = Engine::mount(dir.path(), options(durability)).unwrap();
                prop_assert_eq!(db.status().applied_lsn, lsn);
                let dump = db.read(|kv, txn| kv.dump(txn)).unwrap();
                prop_assert_eq!(dump, model.clone().into_iter().collect::<Vec<_>>());
            }
        }
    }
    db.dismount().unwrap();
    let report = mailstore::engine::check(dir.path()).unwrap();
    prop_assert!(report.healthy(), "{:?}", report.problems);
    let db: KvEngine = Engine::mount(dir.path(), options(durability)).unwrap();
    let dump = db.read(|kv, txn| kv.dump(txn)).unwrap();
    prop_assert_eq!(dump, model.into_iter().collect::<Vec<_>>());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn full_durability_matches_model(steps in prop::collection::vec(step(), 1..120)) {
        run(steps, Durability::Full)?;
    }

    #[test]
    fn relaxed_durability_matches_model(steps in prop::collection::vec(step(), 1..120)) {
        run(steps, Durability::Relaxed)?;
    }
}
