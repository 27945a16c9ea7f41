//! An endpoint's prices, and the cost of an answer's tokens at them.

use crate::chat::{CacheCreationTokenDetails, Usage};

/// Prices of one endpoint, in USD per million tokens.
///
/// Prompt tokens read from or written to the provider's prompt cache have prices of their
/// own where the provider charges differently for them (Anthropic: reads at a tenth of the
/// input price, five-minute writes at 1.25 times and one-hour writes at twice; OpenAI and
/// Gemini: cached reads at a fraction); an endpoint without them charges every prompt token
/// at `prompt_per_million`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pricing {
    /// USD per million input tokens.
    pub prompt_per_million: f64,
    /// USD per million output tokens.
    pub completion_per_million: f64,
    /// USD per million input tokens read from the prompt cache; `None`: the prompt price.
    pub cache_read_per_million: Option<f64>,
    /// USD per million input tokens written to the prompt cache; `None`: the prompt price.
    pub cache_write_per_million: Option<f64>,
    /// USD per million input tokens written to the prompt cache for an hour (Anthropic's
    /// `ttl: "1h"`, reported in `cache_creation_token_details`); `None`: the cache write
    /// price.
    pub cache_write_1h_per_million: Option<f64>,
}

impl Pricing {
    /// Prompt and completion prices, and no prices of their own for the prompt cache.
    pub const fn new(prompt_per_million: f64, completion_per_million: f64) -> Self {
        Pricing {
            prompt_per_million,
            completion_per_million,
            cache_read_per_million: None,
            cache_write_per_million: None,
            cache_write_1h_per_million: None,
        }
    }

    /// These prices with the prompt cache's own (`None`: the prompt price).
    pub const fn with_cache(mut self, read: Option<f64>, write: Option<f64>) -> Self {
        self.cache_read_per_million = read;
        self.cache_write_per_million = write;
        self
    }

    /// These prices with a price of its own for one-hour cache writes (`None`: the cache
    /// write price).
    pub const fn with_cache_write_1h(mut self, price: Option<f64>) -> Self {
        self.cache_write_1h_per_million = price;
        self
    }

    /// True when every price is zero.
    pub fn is_free(&self) -> bool {
        self.named()
            .iter()
            .all(|(_, price)| price.unwrap_or(0.0) == 0.0)
    }

    /// The prices, each with its name in error messages.
    pub(crate) fn named(&self) -> [(&'static str, Option<f64>); 5] {
        [
            ("prompt", Some(self.prompt_per_million)),
            ("completion", Some(self.completion_per_million)),
            ("cache read", self.cache_read_per_million),
            ("cache write", self.cache_write_per_million),
            ("one-hour cache write", self.cache_write_1h_per_million),
        ]
    }

    /// The cost in USD of `prompt` input and `completion` output tokens at these prices, with
    /// no prompt token read from or written to the cache.
    pub fn cost(&self, prompt: u64, completion: u64) -> f64 {
        self.cost_with_cache(&Tokens {
            prompt,
            completion,
            ..Tokens::default()
        })
    }

    /// The cost in USD of `tokens` at these prices.
    ///
    /// Tokens at the same price are added up before they are multiplied, so an endpoint
    /// without cache prices costs exactly `prompt × price`, cached tokens or not. A provider's
    /// cache counts are capped at its prompt count (reads first, then writes, of which the
    /// one-hour ones), so no token is charged twice.
    pub fn cost_with_cache(&self, tokens: &Tokens) -> f64 {
        let prompt_price = self.prompt_per_million;
        let read = tokens.cache_read.min(tokens.prompt);
        let write = tokens.cache_write.min(tokens.prompt - read);
        let price_1h = self
            .cache_write_1h_per_million
            .or(self.cache_write_per_million);
        // At the same price as the other writes, they are added up with them.
        let write_1h = if price_1h == self.cache_write_per_million {
            0
        } else {
            tokens.cache_write_1h.min(write)
        };
        let mut at_prompt_price = tokens.prompt - read - write;
        let mut other = 0.0;
        for (count, price) in [
            (read, self.cache_read_per_million),
            (write - write_1h, self.cache_write_per_million),
            (write_1h, price_1h),
        ] {
            match price {
                Some(p) if p != prompt_price => other += count as f64 * p,
                _ => at_prompt_price += count,
            }
        }
        (at_prompt_price as f64 * prompt_price
            + tokens.completion as f64 * self.completion_per_million
            + other)
            / 1_000_000.0
    }

    /// `usage` with its `cost` set from these prices.
    pub fn price(&self, mut usage: Usage) -> Usage {
        usage.cost = Some(self.cost_with_cache(&Tokens::of(&usage)));
        usage
    }
}

/// The token counts a cost is computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Input tokens, those read from and written to the prompt cache included.
    pub prompt: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write: u64,
    /// Of `cache_write`, the tokens written for an hour.
    pub cache_write_1h: u64,
    /// Output tokens, reasoning included.
    pub completion: u64,
}

impl Tokens {
    /// The counts a provider reported (`prompt_tokens_details.cached_tokens` and
    /// `cache_write_tokens` for the cache, `cache_creation_token_details` for the writes by
    /// lifetime; DeepSeek's `prompt_cache_hit_tokens` when there are no details).
    pub fn of(usage: &Usage) -> Self {
        let details = usage.prompt_tokens_details.as_ref();
        let by_ttl = details.and_then(|d| d.cache_creation_token_details.as_deref());
        let ttl = |count: fn(&CacheCreationTokenDetails) -> Option<u64>| {
            by_ttl.and_then(count).unwrap_or(0)
        };
        let write_1h = ttl(|t| t.ephemeral_1h_input_tokens);
        Tokens {
            prompt: usage.prompt_tokens,
            cache_read: details
                .and_then(|d| d.cached_tokens)
                .or_else(|| {
                    usage
                        .extra
                        .get("prompt_cache_hit_tokens")
                        .and_then(serde_json::Value::as_u64)
                })
                .unwrap_or(0),
            cache_write: details
                .and_then(|d| d.cache_write_tokens)
                .unwrap_or_else(|| ttl(|t| t.ephemeral_5m_input_tokens).saturating_add(write_1h)),
            cache_write_1h: write_1h,
            completion: usage.completion_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Usage;

    #[test]
    fn prompt_cache_tokens_are_charged_at_their_own_prices() {
        let tokens = |prompt, cache_read, cache_write, completion| Tokens {
            prompt,
            cache_read,
            cache_write,
            cache_write_1h: 0,
            completion,
        };
        // Without cache prices every prompt token costs the prompt price.
        let plain = Pricing::new(3.0, 15.0);
        for t in [
            tokens(1000, 600, 300, 50),
            tokens(7, 0, 0, 3),
            tokens(0, 9, 9, 0),
        ] {
            assert_eq!(
                plain.cost_with_cache(&t),
                (t.prompt as f64 * 3.0 + t.completion as f64 * 15.0) / 1e6
            );
        }
        assert_eq!(plain.cost(7, 3), (7.0 * 3.0 + 3.0 * 15.0) / 1e6);

        // Anthropic's ratios: reads at a tenth, writes at 1.25 times.
        let cached = plain.with_cache(Some(0.3), Some(3.75));
        let cost = cached.cost_with_cache(&tokens(1000, 600, 300, 50));
        let want = (100.0 * 3.0 + 600.0 * 0.3 + 300.0 * 3.75 + 50.0 * 15.0) / 1e6;
        assert!((cost - want).abs() < 1e-18, "{cost} against {want}");

        // Counts past the prompt are capped (reads first): no token is charged twice.
        assert_eq!(
            cached.cost_with_cache(&tokens(1000, 2000, 500, 0)),
            cached.cost_with_cache(&tokens(1000, 1000, 0, 0))
        );
        assert_eq!(
            cached.cost_with_cache(&tokens(1000, 800, 500, 0)),
            cached.cost_with_cache(&tokens(1000, 800, 200, 0))
        );
        // A cache price equal to the prompt price is the prompt price.
        let same = plain.with_cache(Some(3.0), None);
        assert_eq!(
            same.cost_with_cache(&tokens(1000, 600, 0, 0)),
            plain.cost(1000, 0)
        );

        // `price` reads the counts from the usage's details.
        let usage: Usage = serde_json::from_str(
            r#"{"prompt_tokens":1000,"completion_tokens":50,
                "prompt_tokens_details":{"cached_tokens":600,"cache_write_tokens":300}}"#,
        )
        .unwrap();
        assert_eq!(cached.price(usage).cost, Some(cost));
        // DeepSeek's own field, when there are no details.
        let deepseek: Usage = serde_json::from_str(
            r#"{"prompt_tokens":1000,"completion_tokens":50,"prompt_cache_hit_tokens":600,
                "prompt_cache_miss_tokens":400}"#,
        )
        .unwrap();
        assert_eq!(Tokens::of(&deepseek).cache_read, 600);

        assert!(Pricing::new(0.0, 0.0).is_free());
        assert!(!Pricing::new(0.0, 0.0).with_cache(None, Some(1.0)).is_free());
        assert!(Pricing::new(0.0, 0.0).with_cache(Some(0.0), None).is_free());
    }

    #[test]
    fn one_hour_cache_writes_have_a_price_of_their_own() {
        // Anthropic's ratios on a $3 prompt price: five-minute writes at 1.25 times, one-hour
        // writes at twice.
        let tokens = Tokens {
            prompt: 1000,
            cache_read: 100,
            cache_write: 500,
            cache_write_1h: 200,
            completion: 10,
        };
        let priced = Pricing::new(3.0, 15.0)
            .with_cache(Some(0.3), Some(3.75))
            .with_cache_write_1h(Some(6.0));
        let want = (400.0 * 3.0 + 100.0 * 0.3 + 300.0 * 3.75 + 200.0 * 6.0 + 10.0 * 15.0) / 1e6;
        let cost = priced.cost_with_cache(&tokens);
        assert!((cost - want).abs() < 1e-18, "{cost} against {want}");

        // Without a one-hour price, every write is at the write price.
        let single = Pricing::new(3.0, 15.0).with_cache(Some(0.3), Some(3.75));
        assert_eq!(
            single.cost_with_cache(&tokens),
            single.cost_with_cache(&Tokens {
                cache_write_1h: 0,
                ..tokens
            })
        );
        // Without any write price, at the prompt price.
        let only_1h = Pricing::new(3.0, 15.0).with_cache_write_1h(Some(6.0));
        let want = (800.0 * 3.0 + 200.0 * 6.0 + 10.0 * 15.0) / 1e6;
        assert!((only_1h.cost_with_cache(&tokens) - want).abs() < 1e-18);
        // One-hour counts past the writes (and writes past the prompt) are capped.
        assert_eq!(
            priced.cost_with_cache(&Tokens {
                cache_write_1h: 9_000,
                ..tokens
            }),
            priced.cost_with_cache(&Tokens {
                cache_write_1h: 500,
                ..tokens
            })
        );
        assert!(!Pricing::new(0.0, 0.0)
            .with_cache_write_1h(Some(1.0))
            .is_free());

        // Read from the usage: `cache_creation_token_details` as LiteLLM and the Anthropic
        // translation write it; its sum when `cache_write_tokens` is absent.
        let usage: Usage = serde_json::from_str(
            r#"{"prompt_tokens":1000,"completion_tokens":10,
                "prompt_tokens_details":{"cached_tokens":100,"cache_write_tokens":500,
                "cache_creation_token_details":{"ephemeral_5m_input_tokens":300,
                "ephemeral_1h_input_tokens":200}}}"#,
        )
        .unwrap();
        assert_eq!(Tokens::of(&usage), tokens);
        assert_eq!(priced.price(usage).cost, Some(cost));
        let usage: Usage = serde_json::from_str(
            r#"{"prompt_tokens":1000,"completion_tokens":10,
                "prompt_tokens_details":{"cached_tokens":100,
                "cache_creation_token_details":{"ephemeral_5m_input_tokens":300,
                "ephemeral_1h_input_tokens":200}}}"#,
        )
        .unwrap();
        assert_eq!(Tokens::of(&usage), tokens);
    }
}
