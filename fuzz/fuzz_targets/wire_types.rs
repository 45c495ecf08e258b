// The wire types decoded from the network or the store, in selector order
// (the first byte of a `wire` input). Shared with the seed generator
// (`fuzz/seeds`) through `include!`; append new types at the end so the
// checked-in corpus keeps its meaning.

/// Calls `$m!(index, Type)` for each wire type.
macro_rules! wire_types {
    ($m:ident) => {
        $m!(0, cascade_proto::wire::Submission);
        $m!(1, cascade_proto::wire::RunRecord);
        $m!(2, cascade_proto::wire::Lease);
        $m!(3, cascade_proto::wire::WorkerInfo);
        $m!(4, cascade_proto::wire::TaskMessage);
        $m!(5, cascade_proto::wire::BatchMessage);
        $m!(6, cascade_proto::wire::Claim);
        $m!(7, cascade_proto::wire::ResultRecord);
        $m!(8, cascade_proto::wire::CancelRequest);
        $m!(9, cascade_proto::wire::BatchReport);
        $m!(10, cascade_proto::wire::DeadLetter);
        $m!(11, cascade_proto::EventRecord);
        $m!(12, cascade_proto::TaskSpec);
        $m!(13, cascade_proto::TaskResult);
        $m!(14, serde_json::Value);
    };
}

const WIRE_TYPES: u8 = 15;
