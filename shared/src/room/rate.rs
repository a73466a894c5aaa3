//! A token bucket on the room's clock (milliseconds, passed in).

/// A token bucket: `capacity` tokens, refilled at `per_sec`, one taken per admitted event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    capacity: u32,
    per_sec: u32,
    /// Tokens in thousandths, so refill is exact in integer milliseconds.
    milli_tokens: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn full(capacity: u32, per_sec: u32, now_ms: u64) -> Self {
        TokenBucket { capacity, per_sec, milli_tokens: u64::from(capacity) * 1000, last_ms: now_ms }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        let max = u64::from(self.capacity) * 1000;
        self.milli_tokens = (self.milli_tokens + elapsed.saturating_mul(u64::from(self.per_sec))).min(max);
    }

    /// Takes `n` tokens if there are that many; `false` (and nothing taken) otherwise.
    pub fn try_take(&mut self, n: u32, now_ms: u64) -> bool {
        self.refill(now_ms);
        let cost = u64::from(n) * 1000;
        if self.milli_tokens >= cost {
            self.milli_tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens, or all there are if fewer (a cost charged after the fact, which cannot be refused).
    pub fn take_up_to(&mut self, n: u32, now_ms: u64) {
        self.refill(now_ms);
        self.milli_tokens = self.milli_tokens.saturating_sub(u64::from(n) * 1000);
    }

    /// Tokens (in thousandths) left at `now_ms`.
    pub fn level(&mut self, now_ms: u64) -> u64 {
        self.refill(now_ms);
        self.milli_tokens
    }

    /// Whether the bucket has refilled completely by `now_ms`.
    pub fn is_full(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        self.milli_tokens >= u64::from(self.capacity) * 1000
    }

    /// Takes up to `n` tokens; returns `true` if the bucket is now empty.
    pub fn drain(&mut self, n: u32, now_ms: u64) -> bool {
        self.refill(now_ms);
        self.milli_tokens = self.milli_tokens.saturating_sub(u64::from(n) * 1000);
        self.milli_tokens < 1000
    }
}

/// A user's connects to a room: `burst` in a row, then one every `refill_secs` (a [`TokenBucket`] refilled at
/// one token a second, each connect costing `refill_secs` of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinBucket {
    tokens: TokenBucket,
    cost: u32,
}

impl JoinBucket {
    /// A full bucket at `now_ms`.
    pub fn full(burst: u32, refill_secs: u32, now_ms: u64) -> Self {
        let cost = refill_secs.max(1);
        JoinBucket { tokens: TokenBucket::full(burst.max(1).saturating_mul(cost), 1, now_ms), cost }
    }

    /// Seconds until the next connect is allowed (0: now).
    pub fn wait_secs(&self, now_ms: u64) -> u64 {
        let mut tokens = self.tokens.clone();
        let missing_ms = (u64::from(self.cost) * 1000).saturating_sub(tokens.level(now_ms));
        missing_ms.div_ceil(1000)
    }

    /// Takes one connect; `false` if none is left.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        self.tokens.try_take(self.cost, now_ms)
    }

    /// Whether the bucket has refilled completely (it can be forgotten).
    pub fn is_full(&mut self, now_ms: u64) -> bool {
        self.tokens.is_full(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let mut b = TokenBucket::full(3, 10, 0);
        assert!(b.try_take(1, 0) && b.try_take(1, 0) && b.try_take(1, 0));
        assert!(!b.try_take(1, 0));
        assert!(!b.try_take(1, 99));
        assert!(b.try_take(1, 100));
        assert!(b.try_take(2, 10_000));
        assert!(!b.try_take(2, 10_000));
    }

    #[test]
    fn joins_come_in_a_burst_then_one_per_refill() {
        let mut b = JoinBucket::full(2, 3, 0);
        assert_eq!(b.wait_secs(0), 0);
        assert!(b.try_take(0) && b.try_take(0));
        assert!(!b.try_take(0));
        assert_eq!(b.wait_secs(0), 3);
        assert_eq!(b.wait_secs(2_001), 1);
        assert!(!b.try_take(2_999));
        assert!(b.try_take(3_000));
        assert!(!b.is_full(3_000));
        assert!(b.is_full(9_000));
    }

    #[test]
    fn drain_reports_exhaustion() {
        let mut b = TokenBucket::full(2, 1, 0);
        assert!(!b.drain(1, 0));
        assert!(b.drain(1, 0));
        assert!(!b.drain(0, 1000));
    }
}
