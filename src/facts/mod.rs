//! Facts that travel between layers as request extensions: the generation id, the route plan
//! and the target of one attempt (with its prices), the attempts made, the slot the final
//! usage is reported to, a request kept in a provider's own dialect, and the trace context. A layer's docs say
//! which it inserts and which it reads.

use std::sync::Mutex;

mod attempts;
mod id;
mod native;
mod plan;
mod pricing;
mod slot;
mod trace;

pub use self::attempts::{Attempt, AttemptOutcome, Attempts};
pub use self::id::GenerationId;
pub use self::native::{NativeAnswer, NativeApi, NativeRequest};
pub use self::plan::{Hedge, PriceAnswers, RoutePlan, Target};
pub use self::pricing::{Pricing, Tokens};
pub use self::slot::{SlotReport, StreamEnd, UsageSlot};
pub use self::trace::{parse_traceparent, CaptureContent, TraceContext, TRACEPARENT, TRACESTATE};
pub(crate) use crate::chat::unix_now;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
