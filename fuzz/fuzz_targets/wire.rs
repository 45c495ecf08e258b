//! The MessagePack decoder of every wire type: `cascade_proto::decode`.
//!
//! Input: one selector byte (the type, see `wire_types.rs`), then the
//! message. Whatever decodes must re-encode, and decode again to the same
//! encoding: a message relayed by a coordinator means what it meant. A
//! decoded result's usage is summed as the engine sums it.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("wire_types.rs");

fn check<T>(bytes: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Ok(value) = cascade_proto::decode::<T>(bytes) else {
        return;
    };
    let encoded = cascade_proto::encode(&value).expect("a decoded message encodes");
    let again: T = cascade_proto::decode(&encoded)
        .unwrap_or_else(|e| panic!("{value:?} re-encoded does not decode: {e}"));
    let encoded_again = cascade_proto::encode(&again).expect("a decoded message encodes");
    assert_eq!(
        encoded, encoded_again,
        "{value:?} changed in a round trip: {again:?}"
    );
}

/// What the engine does with a worker's reported usage: sum it per stage and
/// per run, and compare tokens against budgets.
fn sum_usage(result: &cascade_proto::TaskResult) {
    let Some(usage) = &result.usage else {
        return;
    };
    let mut total = cascade_proto::Usage::default();
    total.add(usage);
    total.add(usage);
    let _ = (usage.tokens(), total.tokens(), total.is_empty());
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    macro_rules! decode_as {
        ($i:expr, $t:ty) => {
            if selector % WIRE_TYPES == $i {
                check::<$t>(bytes);
            }
        };
    }
    wire_types!(decode_as);
    let results: Vec<cascade_proto::TaskResult> = match selector % WIRE_TYPES {
        7 => cascade_proto::decode::<cascade_proto::wire::ResultRecord>(bytes)
            .map(|r| vec![r.result])
            .unwrap_or_default(),
        11 => cascade_proto::decode::<cascade_proto::EventRecord>(bytes)
            .map(|r| {
                r.events
                    .into_iter()
                    .filter_map(|e| match e {
                        cascade_proto::Event::TaskFinished(t) => Some(t),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        13 => cascade_proto::decode(bytes)
            .map(|r| vec![r])
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    results.iter().for_each(sum_usage);
});
