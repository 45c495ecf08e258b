//! Grants: how a coordinator tells a result written by a worker that was
//! delivered the attempt from one written by any other holder of the
//! swarm's credentials.
//!
//! ```text
//!  coordinator: secret(run) ── 32 random bytes in the leases bucket (no worker reads it)
//!     grant = HMAC(secret(run), run, task, attempt) ──▶ TaskMessage.grant (only the
//!             consumers of the task's queue ever see it; leads hand it on)
//!  worker:  proof = HMAC(grant, writer) ──▶ ResultRecord.proof, under the key
//!           <run>.<task>.<attempt>.<writer> that only the writer's user may write
//!  coordinator: recomputes the grant, checks the proof and that the key's writer is
//!           the record's worker; drops (logs, counts) anything else
//! ```
//!
//! The grant itself is never stored: a reader of the results bucket sees
//! proofs, which name one writer each and cannot be turned into a grant.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use cascade_proto::{Attempt, RunId, TaskId};

type HmacSha256 = Hmac<Sha256>;

/// Length of a run's secret.
pub const SECRET_LEN: usize = 32;

/// A fresh random secret for a run.
pub fn new_secret() -> Result<[u8; SECRET_LEN], getrandom::Error> {
    let mut s = [0u8; SECRET_LEN];
    getrandom::fill(&mut s)?;
    Ok(s)
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: this cannot fail.
    HmacSha256::new_from_slice(key).expect("HMAC accepts any key length")
}

/// Fields separated by a NUL (which a token never holds), so no two
/// different tuples hash the same bytes.
fn feed(m: &mut HmacSha256, parts: &[&[u8]]) {
    for p in parts {
        m.update(&(p.len() as u64).to_be_bytes());
        m.update(p);
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// The grant of one attempt under the run's secret.
pub fn grant(secret: &[u8], run: &RunId, task: &TaskId, attempt: Attempt) -> String {
    let mut m = mac(secret);
    feed(
        &mut m,
        &[
            b"grant",
            run.as_str().as_bytes(),
            task.as_str().as_bytes(),
            &attempt.0.to_be_bytes(),
        ],
    );
    hex(&m.finalize().into_bytes())
}

fn tag(grant: &str, parts: &[&[u8]]) -> String {
    let mut m = mac(grant.as_bytes());
    feed(&mut m, parts);
    hex(&m.finalize().into_bytes())
}

/// Compared in constant time.
fn tag_ok(grant: &str, parts: &[&[u8]], proof: &str) -> bool {
    let Some(bytes) = unhex(proof) else {
        return false;
    };
    let mut m = mac(grant.as_bytes());
    feed(&mut m, parts);
    m.verify_slice(&bytes).is_ok()
}

/// The grant of a lead's batch under the run's secret.
pub fn batch_grant(secret: &[u8], run: &RunId, batch: &str) -> String {
    let mut m = mac(secret);
    feed(
        &mut m,
        &[b"batch", run.as_str().as_bytes(), batch.as_bytes()],
    );
    hex(&m.finalize().into_bytes())
}

/// What a writer puts in its result: proof of the grant, bound to its name.
pub fn proof(grant: &str, writer: &str) -> String {
    tag(grant, &[b"result", writer.as_bytes()])
}

/// Whether `proof` is [`proof`]`(grant, writer)`.
pub fn verify(grant: &str, writer: &str, proof: &str) -> bool {
    tag_ok(grant, &[b"result", writer.as_bytes()], proof)
}

/// What a claim carries: proof of the grant, bound to who claims which
/// delivery (so a copied proof cannot make a newer claim).
pub fn claim_proof(grant: &str, worker: &str, delivered: u64, stream_seq: u64) -> String {
    tag(
        grant,
        &[
            b"claim",
            worker.as_bytes(),
            &delivered.to_be_bytes(),
            &stream_seq.to_be_bytes(),
        ],
    )
}

/// Whether `claim` carries [`claim_proof`] under `grant`.
pub fn claim_ok(grant: &str, claim: &cascade_proto::wire::Claim) -> bool {
    claim.proof.as_deref().is_some_and(|p| {
        tag_ok(
            grant,
            &[
                b"claim",
                claim.worker.as_bytes(),
                &claim.delivered.to_be_bytes(),
                &claim.stream_seq.unwrap_or(0).to_be_bytes(),
            ],
            p,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_only_for_its_grant_and_writer() {
        let secret = new_secret().expect("random");
        let run = RunId::new("r");
        let g = grant(&secret, &run, &TaskId::new("t"), Attempt(1));
        assert_eq!(g, grant(&secret, &run, &TaskId::new("t"), Attempt(1)));
        let p = proof(&g, "w1");
        assert!(verify(&g, "w1", &p));
        assert!(!verify(&g, "w2", &p), "bound to the writer");
        let other = grant(&secret, &run, &TaskId::new("t"), Attempt(2));
        assert!(!verify(&other, "w1", &p), "bound to the attempt");
        let other_secret = new_secret().expect("random");
        let forged = grant(&other_secret, &run, &TaskId::new("t"), Attempt(1));
        assert!(!verify(&forged, "w1", &p));
        for junk in ["", "zz", "00", &p[..10]] {
            assert!(!verify(&g, "w1", junk), "{junk}");
        }
    }

    #[test]
    fn a_claim_proof_covers_the_delivery() {
        let g = grant(
            &[7; SECRET_LEN],
            &RunId::new("r"),
            &TaskId::new("t"),
            Attempt(1),
        );
        let mut c = cascade_proto::wire::Claim {
            v: cascade_proto::PROTOCOL_VERSION,
            worker: "w1".into(),
            delivered: 2,
            at: 0,
            stream_seq: Some(9),
            proof: None,
        };
        assert!(!claim_ok(&g, &c));
        c.proof = Some(claim_proof(&g, "w1", 2, 9));
        assert!(claim_ok(&g, &c));
        c.delivered = 3;
        assert!(!claim_ok(&g, &c), "a copied proof makes no newer claim");
    }
}
